"""Beta schedules, respacing and the respaced tables against the PyTorch reference."""

import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.config import DiffusionConfig
from glide_jax.diffusion import beta_schedule, make_schedule, respace_betas, space_timesteps

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
