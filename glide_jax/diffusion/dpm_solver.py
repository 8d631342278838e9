"""DPM-Solver++(2M) (Lu et al. 2022): a deterministic second-order multistep solver in data-prediction form.

One step works in log-SNR lambda = log(alpha / sigma), alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar), and remembers the previous step's x_0 prediction
and step size; the memory rides in the carry of the compiled sampling loop
(``samplers.sample_loop``, sampler name ``"dpm++2m"``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax.numpy as jnp

from glide_jax.diffusion.prediction import CondFn, DenoisedFn, ModelFn, guided_prediction
from glide_jax.diffusion.schedule import Schedule


class DPMState(NamedTuple):
    """Memory of DPM-Solver++(2M): the previous x_0 prediction and log-SNR step, per row."""

    prev_x0: jnp.ndarray
    prev_h: jnp.ndarray
    has_prev: jnp.ndarray

    @classmethod
    def init(cls, x: jnp.ndarray) -> "DPMState":
        b = x.shape[0]
        return cls(jnp.zeros_like(x), jnp.zeros((b,), jnp.float32), jnp.zeros((b,), bool))


def dpm_solver_pp_2m_step(
    s: Schedule,
    model_fn: ModelFn,
    x: jnp.ndarray,
    t: jnp.ndarray,
    state: DPMState,
    *,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray, DPMState]:
    """One DPM-Solver++(2M) step from index t to the schedule's previous index.

    With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) and
    lambda = log(alpha / sigma), the exact solution of the probability-flow ODE
    in data-prediction form, with the x_0 prediction D held fixed over the
    step, is ``x' = (sigma'/sigma) x + (alpha' - alpha sigma'/sigma) D``.
    Second order comes from extrapolating D linearly in lambda with the
    previous step's x_0. The first step is first order, and so are the last
    two ("lower order final"): the last lands on sigma' = 0 (lambda' = inf),
    and the one before enters index 0, whose log-SNR (about 5 for the cosine
    schedule) lies so far beyond index 1 that the linear extrapolation
    overshoots (on a Gaussian toy problem 25 steps are 4x more accurate
    without it). Returns ``(x_next, pred_xstart, new_state)``.
    """
    x0 = guided_prediction(s, model_fn, x, t, clip_denoised, denoised_fn, cond_fn).pred_xstart
    alpha = jnp.take(s.sqrt_alphas_cumprod, t)
    sigma = jnp.take(s.sqrt_one_minus_alphas_cumprod, t)
    ab_next = jnp.take(s.alphas_cumprod_prev, t)
    alpha_n, sigma_n = jnp.sqrt(ab_next), jnp.sqrt(1 - ab_next)
    final = sigma_n <= 0
    lam = jnp.log(alpha) - jnp.log(sigma)
    lam_n = jnp.log(alpha_n) - jnp.log(jnp.where(final, 1.0, sigma_n))
    h = jnp.where(final, 0.0, lam_n - lam)
    second = state.has_prev & (t >= 2) & (state.prev_h > 0)
    # D = x0 + (x0 - prev_x0) * h / (2 h_prev): linear extrapolation in lambda.
    c = jnp.where(second, h / (2 * jnp.where(second, state.prev_h, 1.0)), 0.0)
    bshape = (-1,) + (1,) * (x.ndim - 1)
    c = c.reshape(bshape)
    d = x0 + c * (x0 - state.prev_x0)
    ratio = (sigma_n / sigma).reshape(bshape)
    x_next = ratio * x + (alpha_n.reshape(bshape) - alpha.reshape(bshape) * ratio) * d
    return x_next, x0, DPMState(prev_x0=x0, prev_h=h, has_prev=jnp.ones_like(state.has_prev))
