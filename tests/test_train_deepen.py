"""Warm starts of a U-Net from a trained one, and deepening it by one resolution level."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.models.unet import GlideUNet, example_inputs, init_params
from glide_jax.train.deepen import block_roles, levels_added, warm_start_params

SOURCE = ModelConfig(
    UNetConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 1), attention_resolutions=(8,),
               num_head_channels=16, text=TextConfig(text_ctx=8, width=32, layers=1, heads=2, n_vocab=32)),
    DiffusionConfig(steps=100),
)
DEEP = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, channel_mult=(1, 1, 1),
                                                            attention_resolutions=(8, 4)))


def _params(cfg, seed=0):
    init = jax.jit(lambda k: nn.unbox(init_params(cfg.unet, k)["params"]))
    return jax.tree.map(np.asarray, init(jax.random.key(seed, impl="rbg")))  # rbg: compiles fast; any init does


def _param_names(cfg):
    return jax.eval_shape(lambda k: nn.unbox(init_params(cfg, k)["params"]), jax.random.key(0))["unet"]


def test_block_roles_name_every_block_of_the_network():
    for cfg in (SOURCE.unet, DEEP.unet, dataclasses.replace(DEEP.unet, num_res_blocks=2)):
        names = {k.rsplit("_", 1)[0] for k in _param_names(cfg)
                 if k.startswith(("input_blocks", "output_blocks"))}
        assert {f"{kind}_{i}" for kind, i in block_roles(cfg).values()} == names


@pytest.fixture(scope="module")
def src():
    return _params(SOURCE)


def test_deepening_keeps_the_source_blocks_and_copies_the_coarsest_level(src):
    deep = warm_start_params(src, SOURCE, DEEP)
    u, s = deep["unet"], src["unet"]
    same = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))  # noqa: E731
    # 16x16: input 0-3 as they were (stem, res@16, down, res@8); 8x8 -> 4x4 down copies the 16 -> 8 one.
    for k in ("input_blocks_0_0", "input_blocks_1_0", "input_blocks_2_0", "input_blocks_3_0", "input_blocks_3_1"):
        assert same(u[k], s[k])
    assert same(u["input_blocks_4_0"], s["input_blocks_2_0"])
    assert same(u["input_blocks_5_0"], s["input_blocks_3_0"]) and same(u["input_blocks_5_1"], s["input_blocks_3_1"])
    # output blocks shift by one level (two blocks); the new level's start as the old coarsest level's
    for new, old in ((0, 0), (1, 1), (2, 0), (3, 1), (4, 2), (5, 3)):
        layers = [k for k in s if k.startswith(f"output_blocks_{old}_")]
        assert layers and all(same(u[f"output_blocks_{new}_{k.rsplit('_', 1)[1]}"], s[k]) for k in layers)
    for k in ("middle_block_0", "middle_block_1", "middle_block_2", "out_2", "time_embed_0"):
        assert same(u[k], s[k])
    assert same(deep["text"], src["text"])
    # the deepened tree is exactly what the deeper network expects, and it runs
    args = example_inputs(DEEP.unet, 2)
    out = jax.jit(lambda p: GlideUNet(DEEP.unet).apply({"params": p}, *args, **args.kwargs))(deep)
    assert out.shape == (2, 16, 16, 6) and bool(jnp.all(jnp.isfinite(out)))


def test_same_config_copies_and_other_configs_are_refused(src):
    copy = warm_start_params({"params": src}, SOURCE, dataclasses.replace(SOURCE, unet=dataclasses.replace(
        SOURCE.unet, dropout=0.1)))
    assert jax.tree.all(jax.tree.map(np.array_equal, copy, src))
    assert levels_added(SOURCE, DEEP) == 1
    wider = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, num_channels=64))
    with pytest.raises(ValueError, match="num_channels"):
        warm_start_params(src, SOURCE, wider)
    wider_level = dataclasses.replace(DEEP, unet=dataclasses.replace(DEEP.unet, channel_mult=(1, 1, 2)))
    with pytest.raises(ValueError, match="channel_mult"):
        levels_added(SOURCE, wider_level)
    with pytest.raises(ValueError, match="diffusion"):
        levels_added(SOURCE, dataclasses.replace(DEEP, diffusion=DiffusionConfig(steps=200)))
    narrowing = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, channel_mult=(1, 2)))
    with pytest.raises(ValueError, match="same width"):
        levels_added(narrowing, dataclasses.replace(DEEP, unet=dataclasses.replace(DEEP.unet, channel_mult=(1, 2, 2))))


def test_parameters_that_do_not_fit_are_named(src):
    from glide_jax.hub.torch_layout import CheckpointMismatchError

    broken = dict(src, unet={k: v for k, v in src["unet"].items() if k != "out_2"})
    with pytest.raises(CheckpointMismatchError, match="out_2"):
        warm_start_params(broken, SOURCE, SOURCE)


COORDS = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, coord_channels=True))


def test_coordinate_grid_marks_rows_and_columns():
    from glide_jax.models.unet import coordinate_grid

    g = np.asarray(coordinate_grid(2, 4))
    assert g.shape == (2, 4, 4, 2)
    np.testing.assert_allclose(g[0, :, 0, 0], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)  # row: top -1 .. bottom +1
    np.testing.assert_allclose(g[0, 0, :, 1], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)  # column: left -1 .. right +1
    assert np.all(g[:, :, :, 0] == g[:, :, :1, 0]) and np.all(g[1] == g[0])


@pytest.mark.slow  # ~10 s of compilation for an experimental option that no shipped config uses
def test_adding_coordinate_channels_starts_where_the_source_was(src):
    # out_2 is zero at init, which would hide any difference: give it weights first
    rng = np.random.default_rng(1)
    src = dict(src, unet=dict(src["unet"], out_2=jax.tree.map(
        lambda a: rng.normal(scale=0.1, size=a.shape).astype(a.dtype), src["unet"]["out_2"])))
    warm = warm_start_params(src, SOURCE, COORDS)
    kernel = warm["unet"]["input_blocks_0_0"]["kernel"]
    assert kernel.shape[2] == 5 and not kernel[:, :, 3:].any()
    np.testing.assert_array_equal(kernel[:, :, :3], src["unet"]["input_blocks_0_0"]["kernel"])
    args = example_inputs(SOURCE.unet, 2)
    x = jax.random.normal(jax.random.key(3), args[0].shape)
    run = lambda cfg, p: GlideUNet(cfg.unet).apply({"params": p}, x, *args[1:])  # noqa: E731
    before, after = run(SOURCE, src), run(COORDS, warm)
    np.testing.assert_allclose(after, before, atol=1e-6)
    # the coordinate channels do reach the network once their weights move
    nudged = kernel.copy()
    nudged[:, :, 3:] = 0.1
    moved = dict(warm, unet=dict(warm["unet"], input_blocks_0_0=dict(warm["unet"]["input_blocks_0_0"], kernel=nudged)))
    assert float(jnp.abs(run(COORDS, moved) - before).max()) > 1e-3
    with pytest.raises(ValueError, match="coord_channels"):
        warm_start_params(warm, COORDS, SOURCE)


def test_inpaint_widening_keeps_coordinate_channels_last():
    from glide_jax.train import finetune

    k = np.random.default_rng(0).normal(size=(3, 3, 5, 8)).astype(np.float32)  # [x, coords]
    wide = finetune.widen_first_conv(k, 3, super_res=False, coords=True)  # [x, image*mask, mask, coords]
    assert wide.shape == (3, 3, 9, 8)
    np.testing.assert_array_equal(wide[:, :, :3], k[:, :, :3])
    np.testing.assert_array_equal(wide[:, :, 7:], k[:, :, 3:])
    assert not wide[:, :, 3:7].any()
    inpaint = dataclasses.replace(COORDS.unet, inpaint=True)
    assert inpaint.model_in_channels == 9
    shapes = jax.eval_shape(lambda key: nn.unbox(init_params(inpaint, key)["params"]), jax.random.key(0))
    assert shapes["unet"]["input_blocks_0_0"]["kernel"].shape[2] == 9


def test_coordinate_channels_survive_a_config_round_trip():
    from glide_jax.config import config_from_dict, config_to_dict

    assert config_from_dict(config_to_dict(COORDS)).unet.coord_channels
    old = config_to_dict(SOURCE)
    old["unet"].pop("coord_channels", None)  # a config.json written before the field existed
    assert config_from_dict(old) == SOURCE
