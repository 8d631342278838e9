"""Gaussian diffusion for GLIDE: schedules, step maths, losses, samplers and guidance.

Network-independent pure functions over a ``Schedule`` pytree; see the
submodules for the details and the reasons behind each choice.

Samplers (registered in ``sampler_registry``, each one compiled loop for every step count): ``ddpm``,
``ddim``, ``dpm++2m``, ``unipc`` / ``unipc3`` (UniPC-bh2 of order 2 / 3,
``unipc``) and ``euler_a`` (Euler-ancestral, ``euler_ancestral``). Timestep
spacings (``make_schedule(respacing=...)``): ``"N"``, ``"trailingN"``,
``"logsnrN"``, ``"karrasN"``, ``"ddimN"``, ``"fast27"`` and section lists such
as ``"10,10,3,2,2"`` (``schedule.space_timesteps``).
"""

from glide_jax.diffusion.euler_ancestral import euler_ancestral_step
from glide_jax.diffusion.gaussian import (
    MeanVariance,
    condition_mean,
    condition_score,
    p_mean_variance,
    predict_eps_from_xstart,
    predict_xstart_from_eps,
    q_posterior,
    q_sample,
)
from glide_jax.diffusion.guidance import (
    classifier_free_guidance,
    clip_guidance,
    inpaint_denoised_fn,
    sdedit_start,
    similarity_gradient,
)
from glide_jax.diffusion.losses import (
    losses_from_output,
    mse_weights,
    quartile_means,
    sample_timesteps,
    training_losses,
)
from glide_jax.diffusion.noise import NoiseSource, PRNGNoise, RecordedNoise, ZeroNoise
from glide_jax.diffusion.sampler_registry import Sampler, register_sampler, sampler_named, sampler_names
from glide_jax.diffusion.samplers import (
    DPMState,
    ddim_sample,
    dpm_solver_pp_2m_step,
    p_sample,
    sample_loop,
    sample_trajectory,
)
from glide_jax.diffusion.schedule import (
    RespacingError,
    Schedule,
    beta_schedule,
    make_schedule,
    pad_schedule,
    respace_betas,
    schedule_from_betas,
    space_timesteps,
)
from glide_jax.diffusion.unipc import UniPCState, unipc_step
