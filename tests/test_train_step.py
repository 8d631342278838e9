"""Train steps: overfitting, skipped non-finite updates, bf16, EMA, the CLIP loss.

Gradient accumulation is checked under a mesh in ``test_train_sharding.py``.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.config import ClipConfig, DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.data import shapes
from glide_jax.models.clip import ClipModel
from glide_jax.family import init_params
from glide_jax.train import state as state_lib
from glide_jax.train.experiment import TrainConfig
from glide_jax.train.step import contrastive_loss, make_clip_step, make_diffusion_step

B = 4
MODEL = ModelConfig(
    UNetConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
               num_head_channels=16, text=TextConfig(text_ctx=8, width=32, layers=1, heads=2, n_vocab=32)),
    DiffusionConfig(steps=1000),
)
TRAIN = TrainConfig(lr=2e-3, warmup_steps=0, ema_rate=0.9, grad_clip=1.0, batch_size=B)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = np.stack([shapes.render_example(np.random.default_rng([7, i]), 16)[0] for i in range(B)])
    tokens = rng.integers(1, 32, size=(B, 8)).astype(np.int32)
    mask = np.arange(8)[None] < rng.integers(1, 9, size=(B, 1))
    return {"image": jnp.asarray(images / 127.5 - 1, jnp.float32), "tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def _params(model_cfg=MODEL):
    init = jax.jit(lambda k: nn.unbox(init_params(model_cfg, k)))
    return init(jax.random.key(0, impl="rbg"))  # compiles much faster than threefry; any init does here


@pytest.fixture(scope="module")
def setup():
    tx = state_lib.make_optimizer(TRAIN)
    step = jax.jit(make_diffusion_step(MODEL, TRAIN, tx))
    return tx, step, _params()


def _probe_loss(step, state, batch):
    """Loss at fixed timesteps and noises: the step's draws depend only on (seed, step), so running the
    (non-donating) step function at fixed far-away step numbers reuses its compilation as a probe."""
    return float(np.mean([step(state.replace(step=jnp.int32(10**6 + k)), batch)[1]["loss"] for k in range(4)]))


@pytest.mark.slow  # hundreds of training steps (~35 s)
def test_loss_falls_when_overfitting_a_few_images(setup):
    tx, step, params = setup
    batch = _batch()
    state = state_lib.create_state(params, tx, seed=0)
    before = _probe_loss(step, state, batch)
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    after = _probe_loss(step, state, batch)
    assert int(state.step) == 40 and int(state.skipped) == 0
    assert after < 0.5 * before, (before, after)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    # Per-quartile losses are reported; a quartile without samples is NaN, the others are finite.
    q = [float(metrics[f"loss_q{i}"]) for i in range(4)]
    assert sum(math.isfinite(v) for v in q) >= 1
    assert float(metrics["lr"]) == pytest.approx(TRAIN.lr)
    # The EMA trails the parameters (rate 0.9): it moved, but less than the parameters themselves.
    p0, p1, e1 = (jax.tree.leaves(t)[0] for t in (params, state.params, state.ema_params))
    assert 0 < float(jnp.abs(e1 - p0).max()) < float(jnp.abs(p1 - p0).max())


@pytest.mark.slow  # compiles the micro training step (~25 s)
def test_non_finite_loss_skips_the_update_and_counts_it(setup):
    tx, step, params = setup
    state, _ = step(state_lib.create_state(params, tx, seed=0), _batch())
    before = jax.device_get(state)
    bad = dict(_batch(), image=_batch()["image"].at[0, 0, 0, 0].set(jnp.nan))
    state, metrics = step(state, bad)
    assert not math.isfinite(float(metrics["loss"]))
    assert int(metrics["update_skipped"]) == 1 and int(state.skipped) == 1 and int(state.step) == 2
    for name in ("params", "ema_params", "opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(before, name)), jax.tree.leaves(getattr(state, name))):
            np.testing.assert_array_equal(a, b)
    state, metrics = step(state, _batch(1))  # training goes on
    assert int(metrics["update_skipped"]) == 0 and int(state.skipped) == 1 and int(state.step) == 3
    assert math.isfinite(float(metrics["loss"]))


@pytest.mark.slow  # a second compilation of the step (~10 s) for a one-line wiring; the draw is tested in test_diffusion_losses
def test_high_noise_draw_reaches_the_step(setup):
    tx, _, params = setup
    cfg = dataclasses.replace(TRAIN, high_noise_fraction=1.0, high_noise_from=0.75)
    step = jax.jit(make_diffusion_step(MODEL, cfg, tx))
    _, metrics = step(state_lib.create_state(params, tx, seed=0), _batch())
    # Every timestep lies in the last quarter of the chain: the other quarters report no samples (NaN).
    q = [float(metrics[f"mse_q{i}"]) for i in range(4)]
    assert all(math.isnan(v) for v in q[:3]) and math.isfinite(q[3]), q


@pytest.mark.slow  # one more compilation, slow for bfloat16 on CPU
def test_bfloat16_compute_keeps_float32_params_and_close_loss(setup):
    tx, step, params = setup
    bf16 = dataclasses.replace(MODEL, unet=dataclasses.replace(MODEL.unet, dtype="bfloat16"))
    step16 = jax.jit(make_diffusion_step(bf16, TRAIN, tx))
    state = state_lib.create_state(params, tx, seed=0)
    s32, m32 = step(state, _batch())
    s16, m16 = step16(state, _batch())
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16.params))
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=0.05)
    assert int(s16.skipped) == 0


def test_contrastive_loss_treats_identical_captions_as_matches():
    img = jnp.eye(3)
    txt = jnp.eye(3)
    same = jnp.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], jnp.float32)  # rows 0 and 1 share a caption
    loss, acc = contrastive_loss(img, txt, same, jnp.log(10.0))
    logits = 10.0 * np.eye(3)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = np.array(same) / np.array(same).sum(1, keepdims=True)
    want = -(targets * logp).sum(1).mean()  # symmetric: the transpose gives the same value here
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(acc) == 1.0


@pytest.mark.slow  # hundreds of CLIP steps (~18 s)
def test_clip_step_learns_to_pair_images_with_captions():
    cfg = ClipConfig(image_size=16, patch_size=4, n_vocab=32, max_text_len=8, n_embd=32, n_head_state_text=16,
                     n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16, n_head_image=2, n_xf_blocks_image=1,
                     logit_scale=10.0, n_timesteps=1000)
    train = TrainConfig(lr=3e-3, warmup_steps=0, ema_rate=0.9, batch_size=B)
    tx = state_lib.make_optimizer(train)
    params = jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0, impl="rbg"))
    step = jax.jit(make_clip_step(cfg, train, tx))
    # Four flat colours (their mean survives much of the noise) and four distinct captions.
    colours = np.array([[-1, -1, -1], [1, -1, -1], [-1, 1, -1], [1, 1, 1]], np.float32)
    images = jnp.asarray(colours[:, None, None, :] * np.ones((1, 16, 16, 1), np.float32))
    tokens = jnp.asarray(np.arange(B)[:, None] + 1 + np.zeros((B, 8), int), jnp.int32)
    batch = {"image": images, "tokens": tokens, "lens": jnp.full((B,), 3, jnp.int32)}

    @jax.jit
    def probe(params):  # contrastive loss of the nearly clean images (t = 20)
        t = jnp.full((B,), 20, jnp.int32)
        img, txt = ClipModel(cfg).apply({"params": params}, images, t, tokens, batch["lens"])
        return contrastive_loss(img, txt, jnp.eye(B), params["logit_scale"])

    state = state_lib.create_state(params, tx, seed=0)
    before, _ = probe(state.params)
    for _ in range(25):
        state, m = step(state, batch)
    after, acc = probe(state.params)
    assert float(after) < 0.5 * float(before), (float(before), float(after))
    assert float(acc) == 1.0
    assert float(m["logit_scale"]) != pytest.approx(10.0)  # the temperature is a trained parameter


@pytest.mark.slow  # a short training run (~9 s)
def test_ema_warmup_forgets_the_initialisation():
    plain = TrainConfig(ema_rate=0.999)
    warm = dataclasses.replace(plain, ema_warmup=True)
    assert state_lib.ema_decay(plain, jnp.int32(5)) == 0.999
    decays = np.array([float(state_lib.ema_decay(warm, jnp.int32(s))) for s in range(20000)])
    np.testing.assert_allclose(decays[[0, 90, 1000]], [0.1, 91 / 100, 1001 / 1010], rtol=1e-6)
    assert decays.max() == pytest.approx(0.999) and np.all(np.diff(decays) >= 0)
    # The weight the average still gives the initial parameters after 1000 updates.
    assert np.prod(decays[:1000]) < 1e-20 < 0.999 ** 1000 * 1e-19
    params = {"w": jnp.zeros(3)}
    ema = params
    for s in range(200):  # tracking a parameter that moved to 1 right after init
        ema = state_lib.ema_update(ema, {"w": jnp.ones(3)}, state_lib.ema_decay(warm, jnp.int32(s)))
    assert float(ema["w"][0]) > 0.99
