"""Hybrid training loss against guided-diffusion's training_losses, and the
timestep sampler / quartile logging helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.diffusion import losses_from_output, make_schedule, quartile_means, sample_timesteps, training_losses
from glide_jax.diffusion.losses import discretized_gaussian_log_likelihood, normal_kl


@pytest.fixture(scope="module")
def ref():
    return np.load(require_fixture("diffusion/diffusion.npz"))


def nhwc(a):
    return jnp.asarray(np.moveaxis(a, 1, -1))


@pytest.mark.parametrize("group, steps", [("loss", 1000), ("loss100", 100)])
@pytest.mark.parametrize("loss_type", ["mse", "rescaled_mse"])
def test_training_losses_match_reference(ref, group, steps, loss_type):
    s = make_schedule("squaredcos_cap_v2", steps)
    seen = []

    def stub(x_t, t_model):
        seen.append((x_t, t_model))
        return nhwc(ref[f"{group}/model_output"])

    terms = training_losses(
        s, stub, nhwc(ref[f"{group}/x_start"]), jnp.asarray(ref[f"{group}/t"], jnp.int32), nhwc(ref[f"{group}/noise"]),
        loss_type=loss_type,
    )
    np.testing.assert_allclose(np.asarray(seen[0][0]), np.moveaxis(ref[f"{group}/x_t"], 1, -1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(seen[0][1]), ref[f"{group}/t_model"])
    for k in ("mse", "vb", "loss"):
        want = ref[f"{group}/{loss_type}/{k}"]
        # vb reaches ~70 bits/dim at t=T-1: absolute 1e-4 or 1e-6 relative
        np.testing.assert_allclose(np.asarray(terms[k]), want, atol=1e-4, rtol=1e-6, err_msg=k)


def test_vb_gradient_reaches_only_the_variance(ref):
    s = make_schedule("squaredcos_cap_v2", 1000)
    x0 = nhwc(ref["loss/x_start"])
    noise = nhwc(ref["loss/noise"])
    t = jnp.asarray(ref["loss/t"], jnp.int32)
    x_t = nhwc(ref["loss/x_t"])
    out = nhwc(ref["loss/model_output"])
    g = jax.grad(lambda o: jnp.sum(losses_from_output(s, o, x0, x_t, t, noise)["vb"]))(out)
    assert float(jnp.abs(g[..., :3]).max()) == 0.0
    assert float(jnp.abs(g[..., 3:]).max()) > 0.0
    g_mse = jax.grad(lambda o: jnp.sum(losses_from_output(s, o, x0, x_t, t, noise)["mse"]))(out)
    assert float(jnp.abs(g_mse[..., 3:]).max()) == 0.0


def test_likelihood_helpers():
    assert float(normal_kl(0.3, -1.0, 0.3, -1.0)) == 0.0
    np.testing.assert_allclose(float(normal_kl(1.0, 0.0, 0.0, 0.0)), 0.5, rtol=1e-6)
    # bins of all 256 levels under one Gaussian sum to one
    levels = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(levels, jnp.full_like(levels, 0.1), jnp.full_like(levels, -1.5))
    np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, atol=1e-5)


def test_sampler_and_quartiles():
    t, w = sample_timesteps(jax.random.PRNGKey(0), 4096, 1000)
    assert t.dtype == jnp.int32 and int(t.min()) >= 0 and int(t.max()) <= 999
    assert np.all(np.asarray(w) == 1.0)
    assert abs(float(t.mean()) - 499.5) < 15
    means, counts = quartile_means(jnp.array([0, 249, 250, 999, 998]), jnp.array([1.0, 3.0, 5.0, 7.0, 9.0]), 1000)
    np.testing.assert_array_equal(np.asarray(counts), [2, 1, 0, 2])
    np.testing.assert_allclose(np.asarray(means)[[0, 1, 3]], [2.0, 5.0, 8.0])
    assert np.isnan(np.asarray(means)[2])


def test_high_noise_share_of_the_timestep_draw():
    key = jax.random.PRNGKey(5)
    plain, _ = sample_timesteps(key, 64, 1000)
    # The default draw is unchanged by the option's existence (resumed runs see the same timesteps).
    np.testing.assert_array_equal(plain, jax.random.randint(key, (64,), 0, 1000, dtype=jnp.int32))
    t, w = sample_timesteps(key, 4096, 1000, high_noise_fraction=0.75, high_noise_start=500)
    t = np.asarray(t)
    assert np.all(np.asarray(w) == 1.0) and t.dtype == np.int32
    assert t[:3072].min() >= 500 and t.max() <= 999 and abs(t[:3072].mean() - 749.5) < 10
    assert t[3072:].min() < 20 and abs(t[3072:].mean() - 499.5) < 25  # the rest stays uniform
    every, _ = sample_timesteps(key, 6, 1000, 1.0, 900)
    assert int(jnp.min(every)) >= 900
    for frac, start in ((1.5, 500), (-0.1, 500), (0.5, 1000), (0.5, -1)):
        with pytest.raises(ValueError, match="high_noise"):
            sample_timesteps(key, 8, 1000, frac, start)


def test_mse_weights_follow_the_snr():
    from glide_jax.diffusion import mse_weights

    s = make_schedule("squaredcos_cap_v2", 1000)
    t = jnp.array([0, 300, 500, 700, 900, 999])
    ab = np.asarray(s.alphas_cumprod)[np.asarray(t)].astype(np.float64)
    snr = ab / (1 - ab)
    np.testing.assert_array_equal(mse_weights(s, t), np.ones(6))
    trunc = np.asarray(mse_weights(s, t, "truncated_snr", 20.0))
    np.testing.assert_allclose(trunc, np.clip(1 / snr, 1, 20), rtol=1e-4)
    assert trunc[0] == 1.0 and trunc[-1] == 20.0 and 3.0 < trunc[3] < 5.0  # 1/SNR at t=700 is about 4
    minsnr = np.asarray(mse_weights(s, t, "min_snr", 5.0))
    np.testing.assert_allclose(minsnr, np.minimum(snr, 5) / snr, rtol=1e-4)
    assert minsnr[0] < 1e-3 and minsnr[-1] == 1.0
    with pytest.raises(ValueError, match="weighting"):
        mse_weights(s, t, "snr")
    with pytest.raises(ValueError, match="clip"):
        mse_weights(s, t, "truncated_snr", 0.0)


def test_mse_weight_scales_only_the_loss():
    from glide_jax.diffusion import mse_weights

    s = make_schedule("linear", 100)
    key = jax.random.PRNGKey(3)
    x0 = jax.random.uniform(key, (4, 8, 8, 3), minval=-1, maxval=1)
    noise = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = jnp.array([1, 30, 70, 99])
    model_fn = lambda x, tm: jnp.concatenate([0.5 * x, jnp.zeros_like(x)], axis=-1)  # noqa: E731
    plain = training_losses(s, model_fn, x0, t, noise)
    w = mse_weights(s, t, "truncated_snr", 10.0)
    weighted = training_losses(s, model_fn, x0, t, noise, mse_weight=w)
    np.testing.assert_allclose(weighted["mse"], plain["mse"])
    np.testing.assert_allclose(weighted["vb"], plain["vb"])
    np.testing.assert_allclose(weighted["loss"], w * plain["mse"] + plain["vb"], rtol=1e-6)
    assert float(w[-1]) == 10.0 and float(weighted["loss"][-1]) > float(plain["loss"][-1])
