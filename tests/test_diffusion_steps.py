"""Single-step diffusion quantities (q_sample, posterior, p_mean_variance, p_sample,
DDIM) against the reference, with a stub model returning a fixed output."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.diffusion import ddim_sample, make_schedule, p_mean_variance, p_sample, q_posterior, q_sample

GROUPS = {"full": None, "s27": "27"}
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return np.load(require_fixture("diffusion/diffusion.npz"))


def nhwc(a):
    return jnp.asarray(np.moveaxis(a, 1, -1))


def check(got, want_nchw, atol=ATOL, rtol=0.0):
    want = np.moveaxis(want_nchw, 1, -1)
    got = np.asarray(got)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


def setup(ref, group):
    s = make_schedule("squaredcos_cap_v2", 1000, GROUPS[group])
    t = jnp.asarray(ref[f"{group}/t"], jnp.int32)
    seen = []

    def stub(x, t_model):
        seen.append(np.asarray(t_model))
        return nhwc(ref[f"{group}/model_output"])

    return s, t, nhwc(ref[f"{group}/x"]), stub, seen


@pytest.mark.parametrize("group", GROUPS)
def test_q_sample_and_posterior(ref, group):
    s, t, x, _, _ = setup(ref, group)
    x0 = nhwc(ref[f"{group}/x_start"])
    check(q_sample(s, x0, t, nhwc(ref[f"{group}/noise"])), ref[f"{group}/q_sample"])
    mean, var, log_var = q_posterior(s, x0, x, t)
    check(mean, ref[f"{group}/q_posterior_mean"])
    check(var, ref[f"{group}/q_posterior_variance"])
    check(log_var, ref[f"{group}/q_posterior_log_variance"])


@pytest.mark.parametrize("group", GROUPS)
def test_p_mean_variance(ref, group):
    s, t, x, stub, _ = setup(ref, group)
    out = stub(x, None)
    mv = p_mean_variance(s, out, x, t, clip_denoised=True)
    check(mv.mean, ref[f"{group}/p_mean"])
    check(mv.variance, ref[f"{group}/p_variance"])
    check(mv.log_variance, ref[f"{group}/p_log_variance"])
    check(mv.pred_xstart, ref[f"{group}/p_pred_xstart"])
    raw = p_mean_variance(s, out, x, t, clip_denoised=False)
    # up to ~1e5 in magnitude near t=T (1/sqrt(alpha_bar) ~ 2e4): relative comparison
    big = np.abs(ref[f"{group}/p_pred_xstart_noclip"]).max()
    assert big > 1e4
    check(raw.pred_xstart, ref[f"{group}/p_pred_xstart_noclip"], atol=ATOL, rtol=1e-5)
    check(raw.mean, ref[f"{group}/p_mean_noclip"], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("group", GROUPS)
def test_p_sample_with_recorded_noise(ref, group):
    s, t, x, stub, seen = setup(ref, group)
    sample, x0 = p_sample(s, stub, x, t, nhwc(ref[f"{group}/p_sample_noise"]))
    np.testing.assert_array_equal(seen[-1], ref[f"{group}/t_model"])
    check(sample, ref[f"{group}/p_sample"])
    check(x0, ref[f"{group}/p_sample_pred_xstart"])
    # t=0 rows take the mean: no noise is added there
    assert int(t[0]) == 0
    mv = p_mean_variance(s, stub(x, None), x, t)
    np.testing.assert_array_equal(np.asarray(sample[0]), np.asarray(mv.mean[0]))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("eta, name", [(0.0, "eta0"), (0.5, "eta05")])
def test_ddim_with_recorded_noise(ref, group, eta, name):
    s, t, x, stub, seen = setup(ref, group)
    sample, x0 = ddim_sample(s, stub, x, t, nhwc(ref[f"{group}/ddim_sample_{name}_noise"]), eta=eta)
    np.testing.assert_array_equal(seen[-1], ref[f"{group}/t_model"])
    check(sample, ref[f"{group}/ddim_sample_{name}"])
    check(x0, ref[f"{group}/ddim_sample_{name}_pred_xstart"])
