"""The Gaussian diffusion maths as pure functions of a ``Schedule``.

Nothing here calls a network: ``p_mean_variance`` takes the model's output
array, so the same code serves training (where the output comes from a
differentiated forward pass), sampling, and tests with a fixed stub output.
Images are NHWC; a model output carries ``2*C`` channels on the last axis:
predicted noise ``eps`` first, then the learned-range variance value ``v`` in
[-1, 1] that interpolates the log variance between the posterior variance
(v=-1) and beta (v=+1), as in Improved DDPM.

Arithmetic follows the reference's float32 order of operations (each table
lookup is a float32 value, then multiplied), so results agree with the
PyTorch fixtures to float32 rounding.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import jax.numpy as jnp

from glide_jax.diffusion.schedule import Schedule
from glide_jax.errors import InputError

DenoisedFn = Callable[[jnp.ndarray], jnp.ndarray]


def extract(table: jnp.ndarray, t: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """``table[t]`` shaped ``[B, 1, ..., 1]`` to broadcast against an ``ndim``-rank batch."""
    vals = jnp.take(table, t, axis=0)
    return vals.reshape(vals.shape + (1,) * (ndim - vals.ndim))


def q_sample(s: Schedule, x_start: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """Draw x_t ~ q(x_t | x_0) with the given standard-normal ``noise``."""
    nd = x_start.ndim
    return extract(s.sqrt_alphas_cumprod, t, nd) * x_start + extract(s.sqrt_one_minus_alphas_cumprod, t, nd) * noise


def q_posterior(
    s: Schedule, x_start: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray
) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0), each of x_t's shape."""
    nd = x_t.ndim
    mean = extract(s.posterior_mean_coef1, t, nd) * x_start + extract(s.posterior_mean_coef2, t, nd) * x_t
    var = jnp.broadcast_to(extract(s.posterior_variance, t, nd), x_t.shape)
    log_var = jnp.broadcast_to(extract(s.posterior_log_variance_clipped, t, nd), x_t.shape)
    return mean, var, log_var


def predict_xstart_from_eps(s: Schedule, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    nd = x_t.ndim
    return extract(s.sqrt_recip_alphas_cumprod, t, nd) * x_t - extract(s.sqrt_recipm1_alphas_cumprod, t, nd) * eps


def predict_eps_from_xstart(s: Schedule, x_t: jnp.ndarray, t: jnp.ndarray, x_start: jnp.ndarray) -> jnp.ndarray:
    nd = x_t.ndim
    return (extract(s.sqrt_recip_alphas_cumprod, t, nd) * x_t - x_start) / extract(s.sqrt_recipm1_alphas_cumprod, t, nd)


def split_model_output(model_output: jnp.ndarray, channels: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Split a ``[..., 2*C]`` output into (eps, variance values)."""
    if model_output.shape[-1] != 2 * channels:
        raise InputError(
            f"model output has {model_output.shape[-1]} channels; a learned-variance model must give {2 * channels}"
        )
    return model_output[..., :channels], model_output[..., channels:]


def learned_range_log_variance(s: Schedule, var_values: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Log variance interpolated between the posterior (v=-1) and beta (v=+1); v is not clamped."""
    nd = var_values.ndim
    lo = extract(s.posterior_log_variance_clipped, t, nd)
    hi = extract(s.log_betas, t, nd)
    frac = (var_values + 1) / 2
    return frac * hi + (1 - frac) * lo


class MeanVariance(NamedTuple):
    """p(x_{t-1} | x_t) as predicted by the model, plus what it was built from."""

    mean: jnp.ndarray
    variance: jnp.ndarray
    log_variance: jnp.ndarray
    pred_xstart: jnp.ndarray
    eps: jnp.ndarray  # the model's raw noise prediction


def process_xstart(
    x_start: jnp.ndarray, clip_denoised: bool = True, denoised_fn: Optional[DenoisedFn] = None
) -> jnp.ndarray:
    """Apply ``denoised_fn`` then (optionally) clamp to [-1, 1], in the reference's order."""
    if denoised_fn is not None:
        x_start = denoised_fn(x_start)
    if clip_denoised:
        x_start = jnp.clip(x_start, -1.0, 1.0)
    return x_start


def p_mean_variance(
    s: Schedule,
    model_output: jnp.ndarray,
    x: jnp.ndarray,
    t: jnp.ndarray,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
) -> MeanVariance:
    """Reverse-step Gaussian from an eps + learned-range-variance model output."""
    eps, var_values = split_model_output(model_output, x.shape[-1])
    log_var = learned_range_log_variance(s, var_values, t)
    x0 = process_xstart(predict_xstart_from_eps(s, x, t, eps), clip_denoised, denoised_fn)
    mean, _, _ = q_posterior(s, x0, x, t)
    return MeanVariance(mean=mean, variance=jnp.exp(log_var), log_variance=log_var, pred_xstart=x0, eps=eps)


def condition_mean(mv: MeanVariance, grad: jnp.ndarray) -> jnp.ndarray:
    """Shift the mean by ``variance * grad log p(y|x)`` (Sohl-Dickstein et al.)."""
    return mv.mean + mv.variance * grad


def condition_score(s: Schedule, mv: MeanVariance, x: jnp.ndarray, t: jnp.ndarray, grad: jnp.ndarray) -> MeanVariance:
    """Fold ``grad log p(y|x)`` into the implied score (Song et al.); used by the deterministic samplers."""
    ab = extract(s.alphas_cumprod, t, x.ndim)
    eps = predict_eps_from_xstart(s, x, t, mv.pred_xstart)
    eps = eps - jnp.sqrt(1 - ab) * grad
    x0 = predict_xstart_from_eps(s, x, t, eps)
    mean, _, _ = q_posterior(s, x0, x, t)
    return mv._replace(mean=mean, pred_xstart=x0, eps=eps)
