"""Training objective of GLIDE: Improved DDPM's hybrid loss.

GLIDE models predict both the noise (trained with a plain MSE) and a
per-pixel variance interpolation value (trained through the variational
bound). The bound term sees the eps prediction through ``stop_gradient`` so it
shapes only the variance, and with ``rescaled_mse`` it is weighted by
``T/1000`` so that its size does not depend on the number of diffusion steps.
Everything is per sample so callers can reweight, average or log by timestep.

``mse_weights`` offers reweightings of the MSE: the plain eps MSE scores an
error in the predicted image at noise level t by ``SNR(t)``, so at high noise,
where the layout of a scene is chosen, it barely counts; Salimans & Ho's
truncated-SNR weighting ``max(1, 1/SNR)`` (capped) gives those steps weight,
Min-SNR the opposite.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from glide_jax.diffusion.gaussian import p_mean_variance, q_posterior, q_sample, split_model_output
from glide_jax.diffusion.schedule import Schedule
from glide_jax.errors import InputError

LOSS_TYPES = ("mse", "rescaled_mse")
MSE_WEIGHTINGS = ("eps", "truncated_snr", "min_snr")
_LN2 = math.log(2.0)


def mean_over_pixels(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over every axis except the leading batch axis."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> jnp.ndarray:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: jnp.ndarray) -> jnp.ndarray:
    """The tanh approximation of the standard normal CDF used by the reference (not ``erf``)."""
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: jnp.ndarray, means: jnp.ndarray, log_scales: jnp.ndarray) -> jnp.ndarray:
    """Log probability (nats) of 8-bit images ``x`` in [-1, 1] under a Gaussian binned to width 2/255.

    The outermost bins extend to -inf / +inf so the probabilities sum to one.
    """
    centered = x - means
    inv_std = jnp.exp(-log_scales)
    cdf_hi = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_lo = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_hi = jnp.log(jnp.maximum(cdf_hi, 1e-12))
    log_sf_lo = jnp.log(jnp.maximum(1.0 - cdf_lo, 1e-12))
    log_bin = jnp.log(jnp.maximum(cdf_hi - cdf_lo, 1e-12))
    return jnp.where(x < -0.999, log_cdf_hi, jnp.where(x > 0.999, log_sf_lo, log_bin))


def vb_terms_bpd(
    s: Schedule, model_output: jnp.ndarray, x_start: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray
) -> jnp.ndarray:
    """Per-sample variational-bound term in bits per dimension.

    For t > 0 the KL between the true posterior and the model's reverse step;
    at t = 0 the negative log likelihood of ``x_start`` under the decoder.
    The x_0 prediction is not clipped here.
    """
    true_mean, _, true_log_var = q_posterior(s, x_start, x_t, t)
    mv = p_mean_variance(s, model_output, x_t, t, clip_denoised=False)
    kl = mean_over_pixels(normal_kl(true_mean, true_log_var, mv.mean, mv.log_variance)) / _LN2
    nll = -discretized_gaussian_log_likelihood(x_start, mv.mean, 0.5 * mv.log_variance)
    nll = mean_over_pixels(nll) / _LN2
    return jnp.where(t == 0, nll, kl)


def losses_from_output(
    s: Schedule,
    model_output: jnp.ndarray,
    x_start: jnp.ndarray,
    x_t: jnp.ndarray,
    t: jnp.ndarray,
    noise: jnp.ndarray,
    loss_type: str = "mse",
) -> Dict[str, jnp.ndarray]:
    """Hybrid loss terms ``{"mse", "vb", "loss"}`` (each ``[B]``) for a given model output."""
    if loss_type not in LOSS_TYPES:
        raise InputError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    eps, var_values = split_model_output(model_output, x_start.shape[-1])
    # The bound trains only the variance: the eps half is frozen for it.
    frozen = jnp.concatenate([jax.lax.stop_gradient(eps), var_values], axis=-1)
    vb = vb_terms_bpd(s, frozen, x_start, x_t, t)
    if loss_type == "rescaled_mse":
        vb = vb * (s.num_timesteps / 1000.0)
    mse = mean_over_pixels((noise - eps) ** 2)
    return {"mse": mse, "vb": vb, "loss": mse + vb}


def mse_weights(s: Schedule, t: jnp.ndarray, weighting: str = "eps", clip: float = 5.0) -> jnp.ndarray:
    """Per-sample weights ``[B]`` of the eps MSE at diffusion indices ``t``.

    ``eps``: all ones (GLIDE). ``truncated_snr``: ``min(max(1, 1/SNR), clip)``,
    i.e. an image-space loss weighted by ``max(SNR, 1)`` (Salimans & Ho 2022),
    capped because ``1/SNR`` grows without bound at the last steps.
    ``min_snr``: ``min(SNR, clip) / SNR`` (Hang et al. 2023), which instead
    takes weight off the low-noise steps.
    """
    if weighting not in MSE_WEIGHTINGS:
        raise InputError(f"mse weighting must be one of {MSE_WEIGHTINGS}, got {weighting!r}")
    if weighting != "eps" and not clip > 0:
        raise InputError(f"the {weighting} weighting needs a positive clip, got {clip}")
    ab = jnp.take(s.alphas_cumprod, t)
    snr = ab / (1.0 - ab)
    if weighting == "eps":
        return jnp.ones(t.shape, jnp.float32)
    if weighting == "truncated_snr":
        return jnp.clip(1.0 / snr, 1.0, clip).astype(jnp.float32)
    return (jnp.minimum(snr, clip) / snr).astype(jnp.float32)


def training_losses(
    s: Schedule,
    model_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
    x_start: jnp.ndarray,
    t: jnp.ndarray,
    noise: jnp.ndarray,
    loss_type: str = "mse",
    mse_weight: Optional[jnp.ndarray] = None,
) -> Dict[str, jnp.ndarray]:
    """Noise ``x_start`` to index ``t``, run ``model_fn(x_t, timestep_map[t])`` and return the loss terms.

    ``mse_weight`` (``[B]``, see :func:`mse_weights`) scales the MSE inside
    ``loss`` only; the reported ``mse`` stays unweighted so runs compare.
    """
    x_t = q_sample(s, x_start, t, noise)
    out = model_fn(x_t, jnp.take(s.timestep_map, t))
    terms = losses_from_output(s, out, x_start, x_t, t, noise, loss_type)
    if mse_weight is not None:
        terms["loss"] = mse_weight * terms["mse"] + terms["vb"]
    return terms


def sample_timesteps(key: jax.Array, batch_size: int, num_timesteps: int, high_noise_fraction: float = 0.0,
                     high_noise_start: int = 0) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Timestep indices ``[B]`` (int32) and their importance weights (all ones).

    Uniform over ``[0, num_timesteps)`` by default. With ``high_noise_fraction``
    > 0, that share of the batch (rounded, the leading rows) is drawn from
    ``[high_noise_start, num_timesteps)`` instead. This deliberately biases the
    objective towards high noise, where a scene's layout (which object goes
    where) is decided and where the uniform draw with the eps loss puts little
    of the gradient (the shapes project's relation curriculum trains with it;
    projects/shapes/README.md).
    """
    if not 0.0 <= high_noise_fraction <= 1.0:
        raise InputError(f"high_noise_fraction must be in [0, 1], got {high_noise_fraction}")
    if not 0 <= high_noise_start < num_timesteps:
        raise InputError(f"high_noise_start must be in [0, {num_timesteps}), got {high_noise_start}")
    n_high = int(round(batch_size * high_noise_fraction))
    low = 0 if n_high == 0 else jnp.concatenate([jnp.full((n_high,), high_noise_start, jnp.int32),
                                                 jnp.zeros((batch_size - n_high,), jnp.int32)])
    t = jax.random.randint(key, (batch_size,), low, num_timesteps, dtype=jnp.int32)
    return t, jnp.ones((batch_size,), jnp.float32)


def quartile_means(t: jnp.ndarray, values: jnp.ndarray, num_timesteps: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Mean of per-sample ``values`` within each quarter of the timestep range, for logging.

    Returns ``(means[4], counts[4])``; a quartile with no samples has mean NaN.
    Quartile ``k`` holds ``t`` with ``floor(4 t / T) == k``.
    """
    q = jnp.clip((4 * t) // num_timesteps, 0, 3)
    sums = jax.ops.segment_sum(values.astype(jnp.float32), q, num_segments=4)
    counts = jax.ops.segment_sum(jnp.ones_like(values, jnp.float32), q, num_segments=4)
    means = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), jnp.nan)
    return means, counts
