"""Classifier-free guidance, inpainting paste, SDEdit starts and CLIP-style cond_fn."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from glide_jax.diffusion import (
    classifier_free_guidance,
    clip_guidance,
    inpaint_denoised_fn,
    make_schedule,
    p_mean_variance,
    p_sample,
    q_sample,
    sample_loop,
    sample_trajectory,
    sdedit_start,
    similarity_gradient,
)

FULL = make_schedule("squaredcos_cap_v2", 1000)


def conditioned_model(cond, x, t_model):
    """eps depends on x and on a per-row conditioning value; variance values on the row index."""
    rows = jnp.arange(x.shape[0], dtype=jnp.float32).reshape(-1, 1, 1, 1)
    eps = 0.5 * x + cond.reshape(-1, 1, 1, 1)
    return jnp.concatenate([eps, jnp.broadcast_to(rows / 10, x.shape)], -1)


def test_classifier_free_guidance_matches_notebook_formula():
    cond = jnp.array([1.0, 2.0, -1.0, 0.5])  # rows 0,1 conditional; 2,3 unconditional
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 3))
    t = jnp.array([5, 5, 5, 5])
    out = classifier_free_guidance(Partial(conditioned_model, cond), 3.0)(x, t)
    half = x[:2]
    c_eps = 0.5 * half + cond[:2].reshape(-1, 1, 1, 1)
    u_eps = 0.5 * half + cond[2:].reshape(-1, 1, 1, 1)
    guided = u_eps + 3.0 * (c_eps - u_eps)
    np.testing.assert_allclose(np.asarray(out[:2, ..., :3]), np.asarray(guided), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[2:, ..., :3]), np.asarray(guided), atol=1e-6)
    # variance channels stay per row
    np.testing.assert_allclose(np.asarray(out[..., 3:]).reshape(4, -1)[:, 0], [0.0, 0.1, 0.2, 0.3], atol=1e-7)


def test_guidance_scale_and_data_do_not_recompile():
    s = make_schedule("squaredcos_cap_v2", 1000, "4")
    x_T = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2, 3))
    calls = {"n": 0}

    def model(cond, x, t):
        calls["n"] += 1
        return conditioned_model(cond, x, t)

    for scale in (1.0, 3.0, 5.0):
        fn = classifier_free_guidance(Partial(model, jnp.array([1.0, 2.0, 0.0, 0.0]) * scale), scale)
        sample_loop(s, fn, x_T=x_T, sampler="ddim")
    assert calls["n"] == 1


def test_inpaint_paste_fixes_known_region():
    s = make_schedule("squaredcos_cap_v2", 1000, "10")
    image = jnp.linspace(-0.8, 0.8, 2 * 6 * 6 * 3).reshape(2, 6, 6, 3)
    mask = jnp.zeros((2, 6, 6, 1)).at[:, :, :3].set(1.0)
    denoise = inpaint_denoised_fn(image * mask, mask)
    x0 = denoise(jnp.full(image.shape, 0.5))
    np.testing.assert_allclose(np.asarray(x0[:, :, :3]), np.asarray(image[:, :, :3]))
    np.testing.assert_allclose(np.asarray(x0[:, :, 3:]), 0.5)
    # a model whose x0 prediction is always 0.5 everywhere: the sampler lands on the paste
    out = sample_loop(s, Partial(constant_x0_model, jnp.float32(0.5)), x_T=jnp.ones(image.shape), denoised_fn=denoise,
                      sampler="ddim")
    np.testing.assert_allclose(np.asarray(out[:, :, :3]), np.asarray(image[:, :, :3]), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out[:, :, 3:]), 0.5, atol=1e-4)


def constant_x0_model(value, x, t_model):
    ab = jnp.take(FULL.alphas_cumprod, t_model).reshape(-1, 1, 1, 1)
    eps = (x - jnp.sqrt(ab) * value) / jnp.sqrt(1 - ab)
    return jnp.concatenate([eps, jnp.zeros_like(x)], -1)


def test_sdedit_start():
    s = make_schedule("squaredcos_cap_v2", 1000, "50")
    image = jnp.full((2, 4, 4, 3), 0.25)
    noise = jax.random.normal(jax.random.PRNGKey(0), image.shape)
    start, x_t = sdedit_start(s, image, 0.5, noise=noise)
    assert start == 24
    np.testing.assert_allclose(np.asarray(x_t), np.asarray(q_sample(s, image, jnp.full((2,), 24), noise)))
    assert sdedit_start(s, image, 1.0, noise=noise)[0] == 49
    assert sdedit_start(s, image, 0.001, noise=noise)[0] == 0
    steps = sample_trajectory(s, Partial(constant_x0_model, jnp.float32(0.25)), x_t, None, sampler="ddim",
                              start_index=start)
    assert steps.shape[0] == 25
    np.testing.assert_allclose(np.asarray(steps[-1]), 0.25, atol=1e-4)


def test_clip_guidance_shifts_the_mean_by_variance_times_grad():
    s = make_schedule("squaredcos_cap_v2", 1000, "10")
    target = jnp.linspace(-1, 1, 3 * 4 * 4 * 3).reshape(3, 4, 4, 3)

    def similarity(goal, x, t_clip):  # per-row score, highest at goal
        return -jnp.sum((x - goal) ** 2, axis=(1, 2, 3)) * (1.0 + 0.0 * t_clip)

    cond_fn = clip_guidance(similarity_gradient(Partial(similarity, target)), 3.0)
    x = jax.random.normal(jax.random.PRNGKey(4), target.shape)
    np.testing.assert_allclose(np.asarray(cond_fn(x, jnp.array([1, 2, 3]))), np.asarray(-6.0 * (x - target)), atol=1e-5)

    t = jnp.array([5, 5, 0], jnp.int32)
    model = Partial(constant_x0_model, jnp.float32(0.1))
    noise = jax.random.normal(jax.random.PRNGKey(5), x.shape)
    seen = []

    def recording_cond_fn(x_, t_model):
        seen.append(np.asarray(t_model))
        return cond_fn(x_, t_model)

    guided, _ = p_sample(s, model, x, t, noise, cond_fn=recording_cond_fn)
    plain, _ = p_sample(s, model, x, t, noise)
    mv = p_mean_variance(s, model(x, s.timestep_map[t]), x, t)
    np.testing.assert_array_equal(seen[0], np.asarray(s.timestep_map)[[5, 5, 0]])
    np.testing.assert_allclose(np.asarray(guided - plain), np.asarray(mv.variance * -6.0 * (x - target)), atol=1e-5)
