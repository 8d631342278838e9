"""One model evaluation inside a sampler: the network's output turned into the step's x_0 prediction.

Every sampler starts a step the same way: look up the original timestep of
the respaced index, call the network, and form p(x_{t-1} | x_t) with the
(clamped, ``denoised_fn``-processed) x_0 prediction. The solvers that follow
the probability-flow ODE (DDIM, DPM-Solver++, UniPC, Euler-ancestral) fold a
guidance gradient into the score rather than the mean, so they share
``guided_prediction``; the ancestral sampler shifts the mean instead.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import jax.numpy as jnp

from glide_jax.diffusion.gaussian import MeanVariance, condition_score, p_mean_variance
from glide_jax.diffusion.schedule import Schedule

ModelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
CondFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
DenoisedFn = Callable[[jnp.ndarray], jnp.ndarray]


def model_step(s: Schedule, model_fn: ModelFn, x, t, clip_denoised: bool,
               denoised_fn: Optional[DenoisedFn]) -> Tuple[MeanVariance, jnp.ndarray]:
    """The model's reverse-step Gaussian at respaced indices ``t``, and the model timesteps it was given."""
    t_model = jnp.take(s.timestep_map, t)
    out = model_fn(x, t_model)
    return p_mean_variance(s, out, x, t, clip_denoised, denoised_fn), t_model


def guided_prediction(s: Schedule, model_fn: ModelFn, x, t, clip_denoised: bool, denoised_fn: Optional[DenoisedFn],
                      cond_fn: Optional[CondFn]) -> MeanVariance:
    """``model_step`` with ``cond_fn``'s gradient folded into the implied score (Song et al.)."""
    mv, t_model = model_step(s, model_fn, x, t, clip_denoised, denoised_fn)
    if cond_fn is not None:
        mv = condition_score(s, mv, x, t, cond_fn(x, t_model))
    return mv
