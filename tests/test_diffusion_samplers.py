"""Sampling loops: compile-once behaviour, determinism, equivalence with the step
functions, and convergence on analytic toy models where the ideal model is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from glide_jax.diffusion import (
    RecordedNoise,
    UniPCState,
    ddim_sample,
    make_schedule,
    p_sample,
    sample_loop,
    sample_trajectory,
    samplers,
    unipc_step,
)

FULL = make_schedule("squaredcos_cap_v2", 1000)
MU, SD = 0.3, 0.2  # toy data distribution N(MU, SD^2) per element


def point_mass_model(x0, x, t_model):
    """Ideal eps-model when all data equals x0: eps = (x - sqrt(ab) x0) / sqrt(1 - ab)."""
    ab = jnp.take(FULL.alphas_cumprod, t_model).reshape(-1, 1, 1, 1)
    eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    return jnp.concatenate([eps, jnp.zeros_like(x)], -1)


def gaussian_model(tmap, ab_prev_table, x, t_model):
    """Ideal mean *and* variance for N(MU, SD^2) data on a respaced chain.

    The reverse kernel is Gaussian with variance beta_tilde + coef1^2 Var[x0|x_t];
    it is returned as the learned-range value v that reproduces that variance.
    """
    idx = jnp.searchsorted(tmap, t_model)
    ab = jnp.take(FULL.alphas_cumprod, t_model).reshape(-1, 1, 1, 1)
    abp = jnp.take(ab_prev_table, idx).reshape(-1, 1, 1, 1)
    beta = 1 - ab / abp
    var_x0 = SD**2 * (1 - ab) / (ab * SD**2 + 1 - ab)
    eps = jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * MU) / (ab * SD**2 + 1 - ab)
    coef1 = beta * jnp.sqrt(abp) / (1 - ab)
    post = beta * (1 - abp) / (1 - ab)
    lo = jnp.log(jnp.maximum(post, 1e-20))  # post = 0 at t=0, where no noise is added anyway
    v = 2 * (jnp.log(post + coef1**2 * var_x0) - lo) / (jnp.log(beta) - lo) - 1
    return jnp.concatenate([eps, jnp.broadcast_to(v, x.shape)], -1)


def gaussian_target(s, x_T):
    """Where the probability-flow ODE maps x_T: MU + SD * z with z the standardised x_T."""
    ab = s.alphas_cumprod[-1]
    return MU + SD * (x_T - jnp.sqrt(ab) * MU) / jnp.sqrt(ab * SD**2 + 1 - ab)


TRACES = {"n": 0}


def counting_model(w, x, t_model):
    TRACES["n"] += 1  # runs only while tracing
    return jnp.concatenate([w * x, jnp.tanh(x) * 0 + 0.25 * jnp.sin(t_model.astype(jnp.float32)).reshape(-1, 1, 1, 1)], -1)


def test_loops_compile_once():
    s = make_schedule("squaredcos_cap_v2", 1000, "8")
    shape = (2, 4, 4, 3)
    for sampler in ("ddpm", "ddim", "dpm++2m", "unipc", "euler_a"):
        TRACES["n"] = 0
        for seed, w in [(0, 0.5), (1, 0.7), (2, 0.9)]:
            model = Partial(counting_model, jnp.float32(w))
            out = sample_loop(s, model, shape, sampler=sampler, key=jax.random.PRNGKey(seed), eta=0.3)
            assert out.shape == shape and bool(jnp.isfinite(out).all())
        # a different respacing with the same length also reuses the program
        sample_loop(make_schedule("linear", 1000, "ddim8"), model, shape, sampler=sampler, key=jax.random.PRNGKey(3))
        assert TRACES["n"] == 1, sampler


def test_deterministic_for_key():
    s = make_schedule("squaredcos_cap_v2", 1000, "6")
    model = Partial(counting_model, jnp.float32(0.5))
    a = sample_loop(s, model, (2, 4, 4, 3), key=jax.random.PRNGKey(7), sampler="ddpm")
    b = sample_loop(s, model, (2, 4, 4, 3), key=jax.random.PRNGKey(7), sampler="ddpm")
    c = sample_loop(s, model, (2, 4, 4, 3), key=jax.random.PRNGKey(8), sampler="ddpm")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 1e-2


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_loop_equals_step_functions_with_recorded_noise(sampler):
    s = make_schedule("squaredcos_cap_v2", 1000, "5")
    model = Partial(counting_model, jnp.float32(0.8))
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (2, 4, 4, 3))
    noises = jax.random.normal(k2, (5, 2, 4, 4, 3))
    steps = sample_trajectory(s, model, x, RecordedNoise(noises), sampler=sampler, eta=0.5)
    final = sample_loop(s, model, sampler=sampler, x_T=x, noise=RecordedNoise(noises), eta=0.5)
    assert steps.shape == (5, 2, 4, 4, 3)
    for k, i in enumerate(range(4, -1, -1)):
        t = jnp.full((2,), i, jnp.int32)
        if sampler == "ddpm":
            x, _ = p_sample(s, model, x, t, noises[k])
        else:
            x, _ = ddim_sample(s, model, x, t, noises[k], eta=0.5)
        np.testing.assert_allclose(np.asarray(steps[k]), np.asarray(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(final), np.asarray(steps[-1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_key_draws_one_noise_per_step_including_t0(sampler):
    # sample_loop(key) = x_T from the key's first half, then normal(fold_in(second half, step)) for
    # every step, the last (t=0) included: replaying exactly those draws gives the same sample.
    s = make_schedule("squaredcos_cap_v2", 1000, "4")
    model = Partial(counting_model, jnp.float32(0.6))
    shape, key = (2, 4, 4, 3), jax.random.PRNGKey(11)
    init_key, step_key = jax.random.split(key)
    x_T = 0.9 * jax.random.normal(init_key, shape)
    draws = jnp.stack([jax.random.normal(jax.random.fold_in(step_key, k), shape) for k in range(4)])
    from_key = sample_loop(s, model, shape, sampler=sampler, key=key, eta=0.5, temperature=0.9)
    replayed = sample_loop(s, model, sampler=sampler, x_T=x_T, noise=RecordedNoise(draws), eta=0.5)
    assert bool(jnp.isfinite(from_key).all())
    np.testing.assert_allclose(np.asarray(from_key), np.asarray(replayed), rtol=0, atol=1e-6)
    other = sample_loop(s, model, sampler=sampler, x_T=x_T, noise=RecordedNoise(draws[::-1]), eta=0.5)
    assert float(jnp.abs(other - replayed).max()) > 1e-2


def test_new_keys_and_recordings_reuse_the_compiled_loops():
    s = make_schedule("squaredcos_cap_v2", 1000, "3")
    model = Partial(counting_model, jnp.float32(0.5))
    shape = (1, 2, 2, 3)
    sample_loop(s, model, shape, key=jax.random.PRNGKey(0))
    sample_trajectory(s, model, jnp.zeros(shape), RecordedNoise(jnp.zeros((3,) + shape)))
    loops, trajectories = samplers._run_loop._cache_size(), samplers._run_trajectory._cache_size()
    sample_loop(s, model, shape, key=jax.random.PRNGKey(1))
    sample_trajectory(s, model, jnp.ones(shape), RecordedNoise(jnp.ones((3,) + shape)))
    assert samplers._run_loop._cache_size() == loops
    assert samplers._run_trajectory._cache_size() == trajectories


def test_noise_source_errors():
    s = make_schedule("squaredcos_cap_v2", 1000, "3")
    model = Partial(counting_model, jnp.float32(0.5))
    x_T = jnp.zeros((1, 2, 2, 3))
    with pytest.raises(ValueError, match=r"recorded noises must have shape \(3, 1, 2, 2, 3\)"):
        sample_loop(s, model, x_T=x_T, noise=RecordedNoise(jnp.zeros((2, 1, 2, 2, 3))))
    with pytest.raises(TypeError, match="NoiseSource"):
        sample_loop(s, model, x_T=x_T, noise=jnp.zeros((3, 1, 2, 2, 3)))
    with pytest.raises(ValueError, match="needs a key or a noise source"):
        sample_trajectory(s, model, x_T, None, sampler="ddim", eta=0.5)
    # DDIM with eta=0 adds no noise: no key needed, and a key changes nothing.
    np.testing.assert_array_equal(
        np.asarray(sample_loop(s, model, x_T=x_T, sampler="ddim")),
        np.asarray(sample_loop(s, model, x_T=x_T, sampler="ddim", key=jax.random.PRNGKey(5))),
    )


def test_all_samplers_end_at_point_mass():
    s = make_schedule("squaredcos_cap_v2", 1000, "20")
    x0 = jnp.linspace(-0.9, 0.9, 3 * 4 * 4 * 3).reshape(3, 4, 4, 3)
    model = Partial(point_mass_model, x0)
    key = jax.random.PRNGKey(1)
    outs = {
        "ddpm": sample_loop(s, model, x0.shape, key=key, sampler="ddpm"),
        "ddim": sample_loop(s, model, x0.shape, key=key, sampler="ddim"),
        "ddim eta=1": sample_loop(s, model, x0.shape, key=key, eta=1.0, sampler="ddim"),
        "dpm++2m": sample_loop(s, model, x0.shape, key=key, sampler="dpm++2m"),
        "unipc": sample_loop(s, model, x0.shape, key=key, sampler="unipc"),
        "euler_a": sample_loop(s, model, x0.shape, key=key, sampler="euler_a"),
    }
    for name, out in outs.items():
        assert float(jnp.abs(out - x0).max()) < 1e-4, name


def test_dpm_solver_converges_on_gaussian_data():
    key = jax.random.PRNGKey(2)
    x_T = jax.random.normal(key, (2, 8, 8, 3))
    errs = {}
    for n in (25, 50, 100):
        s = make_schedule("squaredcos_cap_v2", 1000, str(n))
        model = Partial(gaussian_model, s.timestep_map, s.alphas_cumprod_prev)
        target = gaussian_target(s, x_T)
        for sampler in ("ddim", "dpm++2m"):
            out = sample_loop(s, model, sampler=sampler, x_T=x_T, clip_denoised=False)
            errs[sampler, n] = float(jnp.abs(out - target).max())
    # second order: each doubling of steps cuts the error by much more than DDIM's ~2x
    assert errs["dpm++2m", 25] < 0.6 * errs["ddim", 25]
    assert errs["dpm++2m", 50] < 0.15 * errs["ddim", 50]
    assert errs["dpm++2m", 100] < 1e-3
    assert errs["ddim", 100] < errs["ddim", 50] < errs["ddim", 25]


def test_ancestral_sampler_reproduces_gaussian_data():
    # With the exact reverse mean and variance, even 12 steps sample N(MU, SD^2) exactly.
    s = make_schedule("squaredcos_cap_v2", 1000, "12")
    model = Partial(gaussian_model, s.timestep_map, s.alphas_cumprod_prev)
    x = sample_loop(s, model, (64, 8, 8, 1), key=jax.random.PRNGKey(3), clip_denoised=False, sampler="ddpm")
    assert abs(float(x.mean()) - MU) < 0.01
    assert abs(float(x.std()) - SD) < 0.01


def test_progress_callback_and_start_index():
    s = make_schedule("squaredcos_cap_v2", 1000, "10")
    seen = []

    def progress(step, total):
        seen.append((step, total))

    model = Partial(counting_model, jnp.float32(0.5))
    final = sample_loop(s, model, (1, 2, 2, 3), key=jax.random.PRNGKey(0), start_index=3, progress=progress,
                        sampler="ddim")
    jax.effects_barrier()
    assert final.shape == (1, 2, 2, 3)
    assert sorted(seen) == [(k, 4) for k in range(4)]
    steps = sample_trajectory(s, model, jnp.zeros((1, 2, 2, 3)), None, sampler="ddim", start_index=3)
    assert steps.shape == (4, 1, 2, 2, 3)
    with pytest.raises(ValueError):
        sample_loop(s, model, (1, 2, 2, 3), sampler="ddpm")  # no key, no noises


def test_euler_ancestral_is_ddim_with_eta_one():
    # sqrt(ab') sigma_up is DDIM's eta=1 noise scale and sqrt(ab') sigma_down its eps coefficient.
    s = make_schedule("squaredcos_cap_v2", 1000, "trailing8")
    model = Partial(counting_model, jnp.float32(0.7))
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    x = jax.random.normal(k1, (2, 4, 4, 3))
    noise = RecordedNoise(jax.random.normal(k2, (7, 2, 4, 4, 3)))
    # From the second step: DDIM's eps coefficient sqrt(1 - ab' - sigma^2) cancels to float32 noise on the first.
    euler = sample_trajectory(s, model, x, noise, sampler="euler_a", start_index=6)
    ddim = sample_trajectory(s, model, x, noise, sampler="ddim", eta=1.0, start_index=6)
    np.testing.assert_allclose(np.asarray(euler), np.asarray(ddim), rtol=0, atol=2e-5)
    deterministic = sample_trajectory(s, model, x, noise, sampler="ddim", start_index=6)
    assert float(jnp.abs(euler[-1] - deterministic[-1]).max()) > 1e-2


def test_unipc_draws_nothing_and_euler_ancestral_needs_noise():
    s = make_schedule("squaredcos_cap_v2", 1000, "6")
    model = Partial(counting_model, jnp.float32(0.5))
    x_T = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 3))
    for sampler in ("unipc", "unipc3"):
        a = sample_loop(s, model, x_T=x_T, sampler=sampler)
        b = sample_loop(s, model, x_T=x_T, sampler=sampler, key=jax.random.PRNGKey(9))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="needs a key or a noise source"):
        sample_loop(s, model, x_T=x_T, sampler="euler_a")
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_loop(s, model, x_T=x_T, sampler="unipc4")


def test_unipc_loop_equals_its_step_function():
    s = make_schedule("squaredcos_cap_v2", 1000, "logsnr7")
    model = Partial(counting_model, jnp.float32(0.8))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 3))
    steps = sample_trajectory(s, model, x, None, sampler="unipc3")
    state = UniPCState.init(x, 3)
    step = jax.jit(unipc_step)
    for k, i in enumerate(range(6, -1, -1)):
        x, _, state = step(s, model, x, jnp.full((2,), i, jnp.int32), state)
        np.testing.assert_allclose(np.asarray(steps[k]), np.asarray(x), atol=1e-5)
    assert np.asarray(state.count).tolist() == [3, 3]
