"""Compute precision and attention implementations: bfloat16 sampling stays close to float32 and
returns float32; jax.nn.dot_product_attention gives today's attention on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.config import get_preset
from glide_jax.sampling.loading import load_pipeline, resolve
from glide_jax.models import layers
from glide_jax.family import abstract_params
from glide_jax.models.unet import GlideUNet
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.families.unet import unet_model_fn

# (T, S, heads, head width) at batch 2; the U-Net's keys are its T tokens plus the caption's.
ATTENTION_SHAPES = {
    "tiny 16x16": (256, 256 + 16, 4, 16),
    "tiny 8x8": (64, 64 + 16, 4, 16),
    "tiny text": (16, 16, 4, 8),
    "base 32x32": (1024, 1024 + 128, 6, 64),  # the chunked path: T > QUERY_CHUNK
    "base 16x16": (256, 256 + 128, 9, 64),
    "base 8x8": (64, 64 + 128, 12, 64),
    "base text": (128, 128, 8, 64),
}


def _random_weights(config, seed=0):
    """Every parameter random with unit-scale activations (fresh init zeroes the output layers)."""
    rng = np.random.default_rng(seed)

    def fill(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in))

    return {"params": jax.tree_util.tree_map(fill, abstract_params(config))}


@pytest.mark.slow  # the released base's attention shapes
@pytest.mark.parametrize("name", sorted(ATTENTION_SHAPES))
def test_dot_product_attention_equals_einsum_attention(name):
    t, s, heads, width = ATTENTION_SHAPES[name]
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, t, heads, width))
    k, v = (jax.random.normal(key, (2, s, heads, width)) for key in keys[1:3])
    biases = [None, jax.random.normal(keys[3], (2, heads, 1, s))] if name == "base 32x32" else [None]
    both = jax.jit(lambda q, k, v, b: [layers.attention(q, k, v, b, name) for name in ("einsum", "xla")])
    for bias in biases:
        einsum, xla = map(np.asarray, both(q, k, v, bias))
        assert xla.shape == (2, t, heads * width)
        # measured: at most 4e-7 on every shape (unit-normal inputs; outputs are averages of v, |out| < ~4)
        assert np.abs(xla - einsum).max() < 2e-6


def test_auto_attention_picks_the_cpu_default_and_unknown_names_fail():
    assert jax.default_backend() == "cpu"
    for dtype in (jnp.float32, jnp.bfloat16):
        assert layers.attention_implementation("auto", dtype) == layers.AUTO_DEFAULT
    assert layers.attention_implementation("xla", jnp.float32) == "xla"
    with pytest.raises(ValueError, match="attention implementation must be one of"):
        layers.attention_implementation("flash", jnp.float32)


@pytest.mark.slow  # a U-Net forward of the fixture model (~35 s on a loaded 2-core CPU)
def test_dot_product_attention_network_matches_the_pytorch_fixture():
    from glide_jax.config import UNetConfig
    from glide_jax.hub.convert_unet import unet_from_torch
    from glide_jax.parity.fixtures import load_fixture, nhwc, prefixed

    meta, arrays = load_fixture(require_fixture("models/text2im.npz"))
    config = UNetConfig.from_reference(meta["create_model_kwargs"])
    params = unet_from_torch(prefixed(arrays, "state/"), config)
    out = GlideUNet(config, attention="xla").apply(
        params, nhwc(arrays["in/x"]), arrays["in/timesteps"].astype(np.int32),
        arrays["in/tokens"].astype(np.int32), arrays["in/mask"])
    np.testing.assert_allclose(np.asarray(out), nhwc(arrays["out/model"]), rtol=0, atol=3e-5)


@pytest.mark.slow  # two compiled networks (~10 s)
def test_bfloat16_sampling_network_stays_close_to_float32_and_returns_float32():
    config = get_preset("tiny-base")
    params = _random_weights(config)
    model = LoadedModel(config, params, tokenizer=None)
    fast = model.with_dtype("bfloat16")
    assert fast.params is params and fast.dtype == "bfloat16" and model.dtype == "float32"
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(fast.params))
    unet = config.unet
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(1, 100, (2, unet.text.text_ctx)), jnp.int32)
    mask = jnp.arange(unet.text.text_ctx)[None] < jnp.array([[5], [16]])
    x = jax.random.normal(jax.random.key(1), (2, unet.image_size, unet.image_size, 3))
    timesteps = jnp.array([999, 10], jnp.int32)
    outputs = {}
    for loaded in (model, fast):
        model_fn = unet_model_fn(loaded.config.unet, loaded.params, tokens, mask)
        outputs[loaded.dtype] = np.asarray(jax.jit(lambda fn, x, t: fn(x, t))(model_fn, x, timesteps))
    assert outputs["bfloat16"].dtype == np.float32
    difference = np.abs(outputs["bfloat16"] - outputs["float32"])
    # measured on these weights: max 0.106, mean 0.016 against a mean |output| of 1.13
    assert 0 < difference.max() < 0.2
    assert difference.mean() < 0.03 * np.abs(outputs["float32"]).mean()


def test_compute_dtype_is_chosen_when_loading_and_checked():
    assert load_pipeline("embedded-base", None, dtype="bfloat16").base.config.unet.dtype == "bfloat16"
    assert resolve("embedded-base").config.unet.dtype == "float32"
    clip = resolve("embedded-clip", dtype="bfloat16")
    assert clip.dtype == clip.config.dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16, got 'bf16'"):
        resolve("embedded-base", dtype="bf16")
