"""U-Net and text transformer: parity with the PyTorch reference, released checkpoint layouts, errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture
from flax.core import meta

from glide_jax.config import UNetConfig, get_preset
from glide_jax.hub.convert_unet import torch_shapes, unet_from_torch
from model_files import unet_to_torch
from glide_jax.hub.torch_layout import CheckpointMismatchError
from glide_jax.family import abstract_params, init_params
from glide_jax.models.unet import GlideUNet
from glide_jax.parity import check_fixture
from glide_jax.parity.fixtures import load_fixture, nhwc, prefixed

MODEL_FIXTURES = ["text2im", "inpaint", "upsample", "upsample_inpaint"]
MANIFESTS = {
    "base": 385_030_726,
    "upsample": 398_361_286,
    "base-inpaint": 385_037_638,
    "upsample-inpaint": 398_368_198,
}


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_model_parity(name):
    errors = check_fixture(require_fixture(f"models/{name}.npz"))
    assert set(errors) >= {"model", "xf_proj", "xf_out", "time_emb"}
    for out, (abs_err, _) in errors.items():
        assert abs_err <= 1e-4, (out, abs_err)
    # The reference's own noise floor is ~5e-6; a real bug shows up far above it.
    assert errors["model"][0] < 3e-5


@pytest.mark.parametrize("preset", sorted(MANIFESTS))
def test_released_checkpoint_layout(preset):
    manifest = json.loads(require_fixture(f"manifests/{preset}.json").read_text())
    expected = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    got = torch_shapes(get_preset(preset).unet)
    assert set(got) == set(expected)
    assert got == expected
    count = sum(int(np.prod(s)) for s in got.values())
    assert count == manifest["total_params"] == MANIFESTS[preset]


def _text2im():
    meta_, arrays = load_fixture(require_fixture("models/text2im.npz"))
    cfg = UNetConfig.from_reference(meta_["create_model_kwargs"])
    return cfg, prefixed(arrays, "state/"), arrays


def test_strict_conversion_lists_every_problem():
    cfg, state, _ = _text2im()
    state = dict(state)
    del state["input_blocks.1.0.in_layers.2.weight"]
    del state["out.2.bias"]
    state["transformer.resblocks.9.ln_1.weight"] = np.zeros(32, np.float32)
    state["time_embed.0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError) as info:
        unet_from_torch(state, cfg)
    err = info.value
    assert err.missing == ["input_blocks.1.0.in_layers.2.weight", "out.2.bias"]
    assert err.unexpected == ["transformer.resblocks.9.ln_1.weight"]
    assert len(err.misshaped) == 1 and "time_embed.0.weight" in err.misshaped[0]
    for key in ("input_blocks.1.0.in_layers.2.weight", "out.2.bias", "transformer.resblocks.9.ln_1.weight"):
        assert key in str(err)


def test_roundtrip_to_torch_layout_is_exact():
    cfg, state, _ = _text2im()
    back = unet_to_torch(unet_from_torch(state, cfg))
    assert set(back) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.slow  # two compilations (~16 s)
def test_cached_text_embedding_matches_full_call():
    cfg, state, arrays = _text2im()
    params = unet_from_torch(state, cfg)
    model = GlideUNet(cfg)
    x, t = nhwc(arrays["in/x"]), arrays["in/timesteps"].astype(np.int32)
    tokens, mask = arrays["in/tokens"].astype(np.int32), arrays["in/mask"]
    full = model.apply(params, x, t, tokens, mask)
    text = model.apply(params, tokens, mask, method=GlideUNet.encode_text)
    cached = model.apply(params, x, t, text_emb=text)
    np.testing.assert_allclose(cached, full, atol=1e-6)
    np.testing.assert_allclose(full, nhwc(arrays["out/model"]), atol=3e-5)


@pytest.mark.slow  # two compilations of a U-Net (~25 s)
def test_bfloat16_compute_stays_close_and_params_stay_float32():
    cfg, state, arrays = _text2im()
    cfg16 = dataclasses.replace(cfg, dtype="bfloat16")
    params = unet_from_torch(state, cfg16)
    assert all(v.dtype == np.float32 for v in jax.tree_util.tree_leaves(params))
    out = GlideUNet(cfg16).apply(params, nhwc(arrays["in/x"]), arrays["in/timesteps"].astype(np.int32),
                                 arrays["in/tokens"].astype(np.int32), arrays["in/mask"])
    assert out.dtype == jnp.float32
    ref = nhwc(arrays["out/model"])
    rel = np.abs(np.asarray(out) - ref).mean() / np.abs(ref).mean()
    assert rel < 0.05, rel


def test_every_parameter_has_logical_axes():
    shapes = jax.eval_shape(lambda k: init_params(get_preset("tiny-upsample-inpaint"), k), jax.random.key(0))
    boxes = jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: isinstance(x, meta.Partitioned))
    assert boxes and all(isinstance(b, meta.Partitioned) for b in boxes)
    for b in boxes:
        assert len(b.names) == len(b.value.shape)


@pytest.mark.parametrize(
    "change",
    [
        dict(resblock_updown=False),  # conv down/up-sampling
        dict(use_scale_shift_norm=False, num_head_channels=-1, num_heads=2, num_heads_upsample=4),
        dict(text=dataclasses.replace(get_preset("tiny-base").unet.text, padding=False, final_ln=False)),
        dict(text=dataclasses.replace(get_preset("tiny-base").unet.text, width=0)),
        dict(num_res_blocks=2, attention_resolutions=(8,)),
    ],
)
@pytest.mark.slow  # builds five more U-Nets (~45 s)
def test_other_architecture_options_build_and_roundtrip(change):
    cfg = dataclasses.replace(get_preset("tiny-base").unet, **change)
    model = GlideUNet(cfg)
    x = jnp.ones((2, 32, 32, 3)) * 0.1
    t = jnp.array([3, 500])
    tokens = jnp.ones((2, 16), jnp.int32) if cfg.text.width else None
    mask = jnp.ones((2, 16), bool) if cfg.text.width else None
    params = meta.unbox(model.init(jax.random.key(0), x, t, tokens, mask))
    out = model.apply(params, x, t, tokens, mask)
    assert out.shape == (2, 32, 32, 6)
    # torch layout → back is exact, and the set of keys is what the layout table says.
    state = unet_to_torch(params)
    assert {k: v.shape for k, v in state.items()} == torch_shapes(cfg)
    again = unet_from_torch(state, cfg)
    np.testing.assert_array_equal(model.apply(again, x, t, tokens, mask), out)


def test_wrong_input_shapes_raise_clear_errors():
    cfg = get_preset("tiny-base").unet
    model = GlideUNet(cfg)
    params = {"params": abstract_params(get_preset("tiny-base"))}
    t = jnp.zeros((1,), jnp.int32)
    tok, mask = jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), bool)
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 32, 32, 3\]"):
        jax.eval_shape(lambda p: model.apply(p, jnp.zeros((1, 64, 64, 3)), t, tok, mask), params)
    with pytest.raises(ValueError, match=r"tokens must have shape \[batch, 16\]"):
        jax.eval_shape(lambda p: model.apply(p, jnp.zeros((1, 32, 32, 3)), t, tok[:, :8], mask[:, :8]), params)
    with pytest.raises(ValueError, match="text-conditional"):
        jax.eval_shape(lambda p: model.apply(p, jnp.zeros((1, 32, 32, 3)), t), params)
    up = get_preset("tiny-upsample").unet
    with pytest.raises(ValueError, match="low_res is required"):
        jax.eval_shape(lambda: GlideUNet(up).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), t, tok, mask))
    inp = get_preset("tiny-inpaint").unet
    with pytest.raises(ValueError, match="inpaint_mask must have shape"):
        jax.eval_shape(lambda: GlideUNet(inp).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), t, tok, mask,
                                                   inpaint_image=jnp.zeros((1, 32, 32, 3)),
                                                   inpaint_mask=jnp.zeros((1, 32, 32, 3))))


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown preset 'bsae'.*base"):
        get_preset("bsae")


@pytest.mark.slow  # long attention on CPU (~7 s)
def test_long_attention_in_query_chunks_equals_one_pass():
    """The 32x32 attention of the full-size models runs in query chunks; the result must not change."""
    from glide_jax.models import layers as L

    ks = jax.random.split(jax.random.key(3), 4)
    t, s, h, d = 2 * L.QUERY_CHUNK, 2 * L.QUERY_CHUNK + 16, 2, 8
    q = jax.random.normal(ks[0], (2, t, h, d))
    k = jax.random.normal(ks[1], (2, s, h, d))
    v = jax.random.normal(ks[2], (2, s, h, d))
    bias = jax.random.normal(ks[3], (2, h, 1, s))
    for b in (None, bias):
        chunked = L.attention(q, k, v, b)
        whole = L._attention(q, k, v, b)
        assert chunked.shape == (2, t, h * d)
        np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=0, atol=2e-6)
        assert "scan" in str(jax.make_jaxpr(L.attention)(q, k, v, b))  # the chunked path was taken
