"""Euler-ancestral sampling on the discrete schedule, as diffusers' EulerAncestralDiscreteScheduler.

That scheduler works on the variance-exploding variable x / sqrt(alpha_bar)
with sigma = sqrt((1 - alpha_bar) / alpha_bar): from sigma to the next
sigma' it splits sigma'^2 into a deterministic part sigma_down^2 and fresh
noise sigma_up^2 = sigma'^2 (sigma^2 - sigma'^2) / sigma^2, takes an Euler
step of the probability-flow ODE down to sigma_down, then adds sigma_up
times a standard-normal draw. Written back in the variance-preserving x of
the rest of this package that is

    x' = sqrt(alpha_bar') (x_0 + sigma_down * eps + sigma_up * z),

where eps is the noise implied by the (clamped) x_0 prediction. The algebra
shows this is exactly DDIM with eta = 1 (the tests check it to float32
rounding), so the sampler converges at first order like DDIM; it is offered
under diffusers' name, for users who compare against that library.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp

from glide_jax.diffusion.gaussian import extract, predict_eps_from_xstart
from glide_jax.diffusion.prediction import CondFn, DenoisedFn, ModelFn, guided_prediction
from glide_jax.diffusion.schedule import Schedule


def euler_ancestral_step(
    s: Schedule,
    model_fn: ModelFn,
    x: jnp.ndarray,
    t: jnp.ndarray,
    noise: jnp.ndarray,
    *,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """One Euler-ancestral step from index t to the previous index; returns ``(sample, pred_xstart)``.

    ``noise`` is the step's standard-normal draw; at the last step (t=0,
    where sigma' = 0) it is multiplied by zero.
    """
    mv = guided_prediction(s, model_fn, x, t, clip_denoised, denoised_fn, cond_fn)
    eps = predict_eps_from_xstart(s, x, t, mv.pred_xstart)
    ab = extract(s.alphas_cumprod, t, x.ndim)
    ab_next = extract(s.alphas_cumprod_prev, t, x.ndim)
    sigma_sq = (1 - ab) / ab
    sigma_next_sq = (1 - ab_next) / ab_next
    sigma_up = jnp.sqrt(sigma_next_sq * (sigma_sq - sigma_next_sq) / sigma_sq)
    # sigma_down^2 = sigma'^2 - sigma_up^2 = sigma'^4 / sigma^2, taken in that form: the difference loses all
    # float32 digits on the first step from t=999, where sigma_up is within 1e-7 of sigma'.
    sigma_down = sigma_next_sq / jnp.sqrt(sigma_sq)
    sample = jnp.sqrt(ab_next) * (mv.pred_xstart + sigma_down * eps + sigma_up * noise)
    return sample, mv.pred_xstart
