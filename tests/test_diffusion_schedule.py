"""Beta schedules, respacing and the respaced tables against the PyTorch reference."""

import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.config import DiffusionConfig
from glide_jax.diffusion import RespacingError, beta_schedule, make_schedule, respace_betas, space_timesteps

SPECS = ["27", "50", "100", "250", "ddim25", "ddim50", "fast27", "10,10,3,2,2"]


@pytest.fixture(scope="module")
def ref():
    return np.load(require_fixture("diffusion/diffusion.npz"))


@pytest.mark.parametrize("name", ["squaredcos_cap_v2", "linear"])
def test_betas_match_reference(ref, name):
    betas = beta_schedule(name, 1000)
    assert betas.dtype == np.float64
    np.testing.assert_allclose(betas, ref[f"betas/{name}"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("spec", SPECS)
def test_space_timesteps_match_reference(ref, spec):
    assert space_timesteps(1000, spec) == tuple(int(i) for i in ref[f"respace/{spec}"])


def test_space_timesteps_forms():
    assert space_timesteps(1000, 27) == space_timesteps(1000, "27") == space_timesteps(1000, [27])
    assert space_timesteps(10, None) == tuple(range(10))
    assert space_timesteps(100, "ddim10") == tuple(range(0, 100, 10))
    # round-half-even: 0, 1.5 -> 2, 3.0, 4.5 -> 4, ... on a 10-step section
    assert space_timesteps(10, "7") == (0, 2, 3, 4, 6, 8, 9)
    with pytest.raises(ValueError):
        space_timesteps(10, "11")
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")


@pytest.mark.parametrize("group, spec", [("full", None), ("s27", "27")])
def test_schedule_tables(ref, group, spec):
    s = make_schedule(DiffusionConfig(1000, "squaredcos_cap_v2"), respacing=spec)
    np.testing.assert_array_equal(np.asarray(s.timestep_map), ref[f"{group}/timestep_map"])
    assert s.timestep_map.dtype == np.int32
    base = beta_schedule("squaredcos_cap_v2", 1000)
    betas = base if spec is None else respace_betas(base, space_timesteps(1000, spec))[0]
    np.testing.assert_allclose(betas, ref[f"{group}/betas"], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(np.asarray(s.betas), ref[f"{group}/betas"].astype(np.float32))
    # respacing keeps alpha_bar at the kept steps
    full = make_schedule("squaredcos_cap_v2", 1000)
    np.testing.assert_allclose(s.alphas_cumprod, np.asarray(full.alphas_cumprod)[np.asarray(s.timestep_map)], rtol=1e-6)


def test_schedule_is_float32_pytree():
    import jax

    s = make_schedule("linear", 100, "ddim10")
    leaves = jax.tree_util.tree_leaves(s)
    assert len(leaves) == 13 and s.num_timesteps == 10
    assert all(l.dtype in (np.float32, np.int32) for l in leaves)
    # posterior log variance at t=0 borrows t=1's value
    assert float(s.posterior_log_variance_clipped[0]) == float(s.posterior_log_variance_clipped[1])
    with pytest.raises(ValueError):
        make_schedule("nope", 10)


COSINE = beta_schedule("squaredcos_cap_v2", 1000)


def test_trailing_spacing():
    assert space_timesteps(1000, "trailing10") == tuple(range(99, 1000, 100))
    assert space_timesteps(1000, "trailing1") == (999,)
    assert space_timesteps(1000, "trailing1000") == tuple(range(1000))
    # 61 steps: the float arange that defines the spacing yields a 62nd element, timestep -1, which is left out
    kept = space_timesteps(1000, "trailing61")
    assert len(kept) == 61 and kept[0] == 15 and kept[-1] == 999
    for n in (3, 7, 27, 61, 103, 999):
        assert len(space_timesteps(1000, f"trailing{n}")) == n
    # over the first 875 timesteps: the top is 874, and every second point of 8 steps is the grid of 4
    assert space_timesteps(1000, "trailing4:875") == (218, 437, 655, 874)
    assert space_timesteps(1000, "trailing8:875")[1::2] == space_timesteps(1000, "trailing4:875")
    assert space_timesteps(1000, "trailing10:1000") == space_timesteps(1000, "trailing10")
    for bad, message in (("trailing4:0", "chain of 0"), ("trailing4:1001", "chain of 1001"),
                         ("trailing9:8", "1 <= N <= 8"), ("trailing4:x", "chain length 'x'")):
        with pytest.raises(ValueError, match=message):
            space_timesteps(1000, bad)


@pytest.mark.parametrize("kind", ["karras", "logsnr"])
def test_log_sigma_spacings_keep_exactly_n_steps(kind):
    log_sigma = 0.5 * np.log((1 - np.cumprod(1 - COSINE)) / np.cumprod(1 - COSINE))
    for n in (2, 5, 20, 100, 500, 1000):
        kept = space_timesteps(1000, f"{kind}{n}", COSINE)
        assert len(kept) == n and kept[0] == 0 and kept[-1] == 999 and list(kept) == sorted(set(kept))
    kept = np.asarray(space_timesteps(1000, f"{kind}20", COSINE))
    # without shared timesteps the steps land on the nearest log sigma of their targets
    lo, hi = log_sigma[0], log_sigma[-1]
    ramp = np.linspace(0, 1, 20)
    targets = hi + ramp * (lo - hi) if kind == "logsnr" else 7 * np.log(
        np.exp(hi / 7) + ramp * (np.exp(lo / 7) - np.exp(hi / 7)))
    nearest = np.abs(targets[:, None] - log_sigma[None]).argmin(1)[::-1]
    free = np.concatenate([[True], np.diff(nearest) > 0])  # targets that do not share a timestep with the next noisier
    assert free.sum() >= 8 and (kept[free] == nearest[free]).mean() > 0.5
    assert make_schedule("squaredcos_cap_v2", 1000, f"{kind}20").num_timesteps == 20
    # linear schedule (GLIDE's upsampler): log sigma is smooth, so no collisions at 27 steps
    linear = beta_schedule("linear", 1000)
    assert len(space_timesteps(1000, f"{kind}27", linear)) == 27


@pytest.mark.parametrize("spec, message", [
    ("-1", "at least 1 step"), ("0", "at least 1 step"), (0, "at least 1 step"), ("0,0", "at least 1 step"),
    ("5,-1", "negative"), ("trailing0", "1 <= N <= 1000"), ("karras0", "1 <= N <= 1000"),
    ("logsnr1001", "1 <= N <= 1000"), ("ddim0", "1 <= N <= 1000"), ("trailing", "'' is not an integer"),
    ("ddimx", "'x' is not an integer"), ("fast", "'fast' is not an integer"), ("10,,3", "'' is not an integer"),
    ("1001", "cannot keep 1001"),
])
def test_bad_respacing_specs(spec, message):
    with pytest.raises(RespacingError, match=message):
        space_timesteps(1000, spec, COSINE)
    assert issubclass(RespacingError, ValueError)


def test_log_sigma_spacings_need_the_schedule():
    with pytest.raises(RespacingError, match="depends on the noise schedule"):
        space_timesteps(1000, "karras20")
    with pytest.raises(RespacingError, match="1000 betas given for a 500-step"):
        space_timesteps(500, "logsnr20", COSINE)
