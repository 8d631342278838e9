"""Starting a run from a trained model: the same model copied, inpainting widening, what is refused,
and an upsampler warm start that trains (its low-res input included)."""

import dataclasses

import jax
import numpy as np
import pytest

from glide_jax.config import ClipConfig, DiffusionConfig, ModelConfig, TextConfig, UNetConfig, get_preset
from glide_jax.hub.torch_layout import CheckpointMismatchError
from glide_jax.family import abstract_params
from glide_jax.models.params import flat_shapes
from glide_jax.train import warm_start

SOURCE = ModelConfig(
    UNetConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 1), attention_resolutions=(8,),
               num_head_channels=16, text=TextConfig(text_ctx=8, width=32, layers=1, heads=2, n_vocab=32)),
    DiffusionConfig(steps=100),
)
INPAINT = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, inpaint=True))


def _random_params(cfg, seed=0):
    """Parameters drawn in numpy on the model's shapes (nothing to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(0, 0.05, a.shape).astype(a.dtype), abstract_params(cfg))


def _same(a, b) -> bool:
    return flat_shapes(a) == flat_shapes(b) and jax.tree.all(jax.tree.map(np.array_equal, a, b))


@pytest.fixture(scope="module")
def src():
    return _random_params(SOURCE)


def test_the_same_model_is_copied_and_other_models_are_refused_by_field(src):
    run_cfg = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, dropout=0.1, dtype="bfloat16"))
    assert _same(warm_start.same_model_params({"params": src}, SOURCE, run_cfg), src)
    wider = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, num_channels=64))
    with pytest.raises(ValueError, match="unet.num_channels: 32 vs 64"):
        warm_start.same_model_params(src, SOURCE, wider)
    with pytest.raises(ValueError, match="diffusion.steps: 100 vs 200"):
        warm_start.same_model_params(src, SOURCE, dataclasses.replace(SOURCE, diffusion=DiffusionConfig(steps=200)))
    with pytest.raises(ValueError, match="ModelConfig vs ClipConfig"):
        warm_start.same_model_params(src, SOURCE, get_preset("tiny-clip"))
    assert warm_start.differences(get_preset("tiny-clip"), dataclasses.replace(get_preset("tiny-clip"),
                                                                                dtype="bfloat16")) == []
    assert warm_start.differences(get_preset("tiny-clip"), ClipConfig()) != []


def test_parameters_that_do_not_fit_are_named(src):
    broken = dict(src, unet={k: v for k, v in src["unet"].items() if k != "out_2"})
    with pytest.raises(CheckpointMismatchError, match="out_2"):
        warm_start.same_model_params(broken, SOURCE, SOURCE)


def test_widened_first_conv_keeps_old_channels_and_zeroes_new_ones():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
    wide = warm_start.widen_first_conv(base, 3, super_res=False)  # [x, image*mask, mask]
    assert wide.shape == (3, 3, 7, 8)
    np.testing.assert_array_equal(wide[:, :, :3], base)
    assert not wide[:, :, 3:].any()
    up = rng.normal(size=(3, 3, 6, 8)).astype(np.float32)
    wide = warm_start.widen_first_conv(up, 3, super_res=True)  # [x, image*mask, mask, low_res]
    assert wide.shape == (3, 3, 10, 8)
    np.testing.assert_array_equal(wide[:, :, :3], up[:, :, :3])
    np.testing.assert_array_equal(wide[:, :, 7:], up[:, :, 3:])
    assert not wide[:, :, 3:7].any()
    with pytest.raises(ValueError, match="input channels"):
        warm_start.widen_first_conv(base, 3, super_res=True)


def test_inpainting_starts_widened_from_a_base_and_copied_from_an_inpainting_model(src):
    widened = warm_start.inpaint_params(src, SOURCE, INPAINT)
    assert flat_shapes(widened) == flat_shapes(abstract_params(INPAINT))
    kernel = widened["unet"][warm_start.FIRST_CONV]["kernel"]
    np.testing.assert_array_equal(kernel[:, :, :3], src["unet"][warm_start.FIRST_CONV]["kernel"])
    assert not kernel[:, :, 3:].any()
    rest = lambda tree: {k: v for k, v in tree["unet"].items() if k != warm_start.FIRST_CONV}  # noqa: E731
    assert _same(rest(widened), rest(src)) and _same(widened["text"], src["text"])
    assert _same(warm_start.inpaint_params(widened, INPAINT, INPAINT), widened)
    other = dataclasses.replace(SOURCE, unet=dataclasses.replace(SOURCE.unet, num_res_blocks=2))
    with pytest.raises(ValueError, match="beyond the inpainting input channels: unet.num_res_blocks"):
        warm_start.inpaint_params(_random_params(other), other, INPAINT)


def test_a_state_dict_npz_starts_an_inpainting_run(tmp_path, src):
    from model_files import unet_to_torch

    np.savez(tmp_path / "base.npz", **{f"state/{k}": v for k, v in unet_to_torch({"params": src}).items()})
    params = warm_start.initial_params(warm_start.inpaint_params, str(tmp_path / "base.npz"), INPAINT)
    np.testing.assert_allclose(params["unet"]["out_2"]["kernel"], src["unet"]["out_2"]["kernel"])
    assert params["unet"][warm_start.FIRST_CONV]["kernel"].shape[2] == 7
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):  # read as the run's own config
        warm_start.initial_params(warm_start.same_model_params, str(tmp_path / "base.npz"), dataclasses.replace(
            SOURCE, unet=dataclasses.replace(SOURCE.unet, num_channels=64)))


def test_a_learnt_vocabulary_comes_from_the_source(tmp_path):
    assert warm_start.inherited_tokenizer(str(tmp_path), "sentencepiece") is None
    (tmp_path / "tokenizer.model").write_bytes(b"spm")
    assert warm_start.inherited_tokenizer(str(tmp_path), "sentencepiece") == f"sentencepiece:{tmp_path}/tokenizer.model"
    assert warm_start.inherited_tokenizer(str(tmp_path), "glide-bpe") is None  # a named tokenizer stays
    assert warm_start.inherited_tokenizer("", "sentencepiece") is None


def test_an_upsampler_run_starts_from_a_model_directorys_parameters(tmp_path):
    # The upsampler reads its low-res input at init: the warm start checks the source against parameter
    # shapes computed with it. That the warm-started upsampler then trains is checked end to end in
    # test_train_entrypoints.py (whose runs share compiled steps).
    from pathlib import Path

    from glide_jax.hub.model_dir import save_model_dir
    from glide_jax.train import loop
    from glide_jax.train.experiment import apply_overrides, load_config_file

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config_file(f"{repo}/experiments/configs/upsample.py:micro")
    source = _random_params(cfg.model, seed=3)
    save_model_dir(tmp_path / "source", cfg.model, {"params": source})
    cfg = apply_overrides(cfg, [f"train.init_from={tmp_path / 'source'}"])
    run = loop.prepare(cfg, tmp_path / "run")
    state, _ = loop.restore_or_initialise(run)
    run.checkpointer.close()
    assert int(state.step) == 0 and int(state.skipped) == 0
    assert _same(jax.device_get(state.params), source) and _same(jax.device_get(state.ema_params), source)
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state[1][0].mu))  # Adam starts at 0
