"""Samplers: single reverse steps and whole compiled sampling loops.

The network is just an argument, ``model_fn(x, t_model) -> [B, H, W, 2C]``,
where ``t_model = schedule.timestep_map[t]`` is the original timestep (the
respacing is applied here, never by wrapping the model). ``denoised_fn(x0)``
post-processes every x_0 prediction (before clamping) and
``cond_fn(x, t_model) -> grad log p(y | x)`` guides the sampler.

``sample_loop`` runs its steps in one ``jax.jit`` program whose step range
and start index are traced values (a ``lax.fori_loop`` with traced bounds,
which runs only the real steps) over the schedule's tables padded to a fixed
length (``schedule.pad_schedule``). So a sampler compiles once per
(callables, image shape, kind of noise source), whatever the step count,
respacing or SDEdit start. Callables are passed to the jitted core as
pytrees: wrap per-call data such as parameters or tokens with
``jax.tree_util.Partial(fn, params, tokens, ...)`` and new values of that
data reuse the compiled loop; a plain function is keyed by its identity, so a
freshly created closure compiles again.

Randomness matches the reference's draw order: one standard-normal draw per
step, made after the model call, also at t=0 (where it is masked out) and
also by DDIM with eta=0. The draws come from a ``NoiseSource``
(``glide_jax.diffusion.noise``): by default ``PRNGNoise`` from the loop's key,
or e.g. ``RecordedNoise`` replaying the reference's draws.

``sample_loop`` returns the final sample; ``sample_trajectory`` runs the same
steps and returns the sample after every step, so its output (and its
``lax.scan``) has the step count in its shape: a diagnostic compiled once per
step count.

The built-in samplers (registered at the end of this module, ``sampler_registry``), all on the eps channels of the learned-variance
models and all inside the same compiled loop:

* ``"ddpm"``: ancestral sampling with the learned variance (GLIDE's own);
* ``"ddim"``: DDIM with any eta (eta=0 deterministic);
* ``"dpm++2m"``: DPM-Solver++(2M) (Lu et al. 2022), a deterministic
  second-order multistep solver in data-prediction form
  (``glide_jax.diffusion.dpm_solver``);
* ``"unipc"`` / ``"unipc3"``: UniPC-bh2 (Zhao et al. 2023) of order 2 / 3,
  a deterministic multistep predictor-corrector in data-prediction form
  (``glide_jax.diffusion.unipc``);
* ``"euler_a"``: Euler-ancestral on the discrete schedule, as diffusers'
  EulerAncestralDiscreteScheduler (``glide_jax.diffusion.euler_ancestral``);
  it draws one noise per step from the loop's ``NoiseSource``;
* ``"stochastic_fewstep"``: Meng et al. 2023's stochastic sampling for
  distilled students (``glide_jax.train.distill``): a deterministic DDIM step
  of twice the length, then one forward step back up with fresh noise.

The solvers are not part of GLIDE; they reuse the (thresholded) x_0
predictions and give good samples in 10-25 model calls. Which timesteps a
loop visits is the schedule's business: ``make_schedule(respacing=...)``
takes the reference's uniform respacing (``"20"``), ``"trailing20"``,
``"logsnr20"`` or ``"karras20"`` (see ``schedule.space_timesteps``).

How they converge, measured with the exact noise prediction of Gaussian
data (tests/test_diffusion_convergence.py, steps uniform in log-SNR from
t=900): doubling 10 to 20 steps divides the error of the output's std by
2.0 for DDIM and 1.9 for Euler-ancestral (first order), by 8.1 for UniPC-2
(third order with its corrector) and by 22.7 for UniPC-3. On GLIDE's whole
cosine chain the first step from t=999 dominates instead: the std error
(data std 0.2) at 10 / 20 steps is

    spacing    ddim            dpm++2m         unipc           unipc3          euler_a
    uniform    -6.1e-2/-3.1e-2 -5.3e-2/-1.6e-2 +6.6e-2/+5.0e-2 +7.4e-2/+5.2e-2 -7.5e-2/-4.8e-2
    trailing   -5.9e-2/-3.2e-2 -5.7e-2/-2.5e-2 -4.9e-2/-1.6e-2 -4.9e-2/-1.6e-2 -7.1e-2/-4.7e-2
    logsnr     -6.7e-2/-3.6e-2 -2.4e-2/+4.2e-3 +3.9e-3/+6.0e-3 +6.4e-2/+3.4e-3 -8.9e-2/-5.8e-2
    karras     -1.2e-1/-7.1e-2 -1.2e-1/-3.8e-2 -6.2e-2/+1.1e-2 -6.0e-2/+6.9e-2 -1.2e-1/-9.7e-2

so the multistep solvers want small steps in log-SNR near the start; which
setting gives the best images is for the benchmark to say, not this toy.
UniPC agrees with diffusers' UniPCMultistepScheduler and Euler-ancestral
with its EulerAncestralDiscreteScheduler (``tools/compare_diffusers_samplers.py``).
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from glide_jax.diffusion.dpm_solver import DPMState, dpm_solver_pp_2m_step
from glide_jax.diffusion.euler_ancestral import euler_ancestral_step
from glide_jax.diffusion.gaussian import condition_mean, extract, predict_eps_from_xstart
from glide_jax.diffusion.noise import NoiseSource, PRNGNoise, ZeroNoise
from glide_jax.diffusion.prediction import CondFn, DenoisedFn, ModelFn, guided_prediction, model_step
from glide_jax.diffusion.sampler_registry import Sampler, register_sampler, sampler_named, sampler_names
from glide_jax.diffusion.schedule import Schedule, pad_schedule
from glide_jax.diffusion.unipc import UniPCState, unipc_step
from glide_jax.errors import InputError

ProgressFn = Callable[[int, int], None]



def _not_last(t: jnp.ndarray, ndim: int) -> jnp.ndarray:
    return (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


def p_sample(
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
    """One ancestral step x_t -> x_{t-1}; returns ``(sample, pred_xstart)``."""
    mv, t_model = model_step(s, model_fn, x, t, clip_denoised, denoised_fn)
    mean = mv.mean if cond_fn is None else condition_mean(mv, cond_fn(x, t_model))
    sample = mean + _not_last(t, x.ndim) * jnp.exp(0.5 * mv.log_variance) * noise
    return sample, mv.pred_xstart


def ddim_sample(
    s: Schedule,
    model_fn: ModelFn,
    x: jnp.ndarray,
    t: jnp.ndarray,
    noise: jnp.ndarray,
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """One DDIM step (eta=0 deterministic, eta=1 DDPM-like); returns ``(sample, pred_xstart)``.

    The noise is re-derived from the processed (clipped / pasted) x_0, so
    thresholding and ``denoised_fn`` act on the whole update.
    """
    mv = guided_prediction(s, model_fn, x, t, clip_denoised, denoised_fn, cond_fn)
    eps = predict_eps_from_xstart(s, x, t, mv.pred_xstart)
    ab = extract(s.alphas_cumprod, t, x.ndim)
    ab_prev = extract(s.alphas_cumprod_prev, t, x.ndim)
    sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab)) * jnp.sqrt(1 - ab / ab_prev)
    mean = mv.pred_xstart * jnp.sqrt(ab_prev) + jnp.sqrt(1 - ab_prev - sigma**2) * eps
    return mean + _not_last(t, x.ndim) * sigma * noise, mv.pred_xstart


def _as_pytree_fn(fn):
    """Callables travel into jit as pytrees; a bare function becomes a leafless ``Partial``."""
    if fn is None or isinstance(fn, Partial):
        return fn
    if not callable(fn):
        raise TypeError(f"expected a callable, got {type(fn).__name__}")
    return Partial(fn)


def _one_step(s, model_fn, denoised_fn, cond_fn, noise, eta, sampler, clip_denoised, x, state, i, k):
    """Loop step ``k`` (0 = the first step taken) at schedule index ``i``: ``(x, state)`` after it."""
    t = jnp.full((x.shape[0],), i, jnp.int32)
    opts = dict(clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn)
    chosen = sampler_named(sampler)
    drawn = None if chosen.deterministic else noise.draw(k, x)
    return chosen.step(s, model_fn, x, t, state, drawn, eta, opts)


def _initial_state(sampler, x_T):
    """The multistep solvers' empty memory (None for the one-step samplers)."""
    return sampler_named(sampler).initial_state(x_T)


_STATIC = ("sampler", "clip_denoised")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _run_loop(s, model_fn, denoised_fn, cond_fn, noise, eta, carry, start, first, stop, *, sampler, clip_denoised):
    """Loop steps ``first .. stop-1`` from ``carry = (x, solver state)``, step k at index ``start - k``.

    The step range and the start index are traced values and the schedule
    arrives padded (``pad_schedule``), so one compiled program serves every
    step count, start index and slice of a loop; only the real steps run.
    """
    def body(k, carry):
        x, state = carry
        return _one_step(s, model_fn, denoised_fn, cond_fn, noise, eta, sampler, clip_denoised, x, state, start - k,
                         k)

    return jax.lax.fori_loop(first, stop, body, carry)


@functools.partial(jax.jit, static_argnames=_STATIC + ("num_steps",))
def _run_trajectory(s, model_fn, denoised_fn, cond_fn, noise, eta, x_T, *, sampler, clip_denoised, num_steps):
    """``[num_steps, *x_T.shape]``: the sample after each step from index ``num_steps - 1`` down to 0.

    The stacked output has one entry per step, so this program is compiled
    per step count.
    """
    def body(carry, k):
        x, state = _one_step(s, model_fn, denoised_fn, cond_fn, noise, eta, sampler, clip_denoised, *carry,
                             num_steps - 1 - k, k)
        return (x, state), x

    counter = jnp.arange(num_steps, dtype=jnp.int32)
    return jax.lax.scan(body, (x_T, _initial_state(sampler, x_T)), counter)[1]


def _loop_arguments(s, model_fn, x_T, noise, sampler, start_index, eta, clip_denoised, denoised_fn, cond_fn):
    """Check a loop's options and put them in the form the compiled loops take: ``(args, static, x_T, num_steps)``."""
    chosen = sampler_named(sampler)
    n_total = s.num_timesteps
    start = n_total - 1 if start_index is None else int(start_index)
    if not 0 <= start < n_total:
        raise InputError(f"start_index {start} outside [0, {n_total})")
    num_steps = start + 1
    x_T = jnp.asarray(x_T, jnp.float32)
    if chosen.deterministic:
        noise = None  # a deterministic solver: nothing is drawn
    elif noise is None:
        if chosen.noise == "always" or not (isinstance(eta, (int, float)) and eta == 0):
            raise InputError(f"sampler {sampler!r} with eta={eta} needs a key or a noise source")
        noise = ZeroNoise()
    elif not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be a NoiseSource (PRNGNoise, RecordedNoise, ...), got {type(noise).__name__}")
    else:
        noise.validate(num_steps, x_T.shape)
    args = (pad_schedule(s), _as_pytree_fn(model_fn), _as_pytree_fn(denoised_fn), _as_pytree_fn(cond_fn), noise,
            jnp.asarray(eta, jnp.float32))
    return args, dict(sampler=sampler, clip_denoised=clip_denoised), x_T, num_steps


def sample_loop(
    s: Schedule,
    model_fn: ModelFn,
    shape: Optional[Sequence[int]] = None,
    *,
    sampler: str = "ddpm",
    key: Optional[jax.Array] = None,
    x_T: Optional[jnp.ndarray] = None,
    noise: Optional[NoiseSource] = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
    temperature: float = 1.0,
    start_index: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
) -> jnp.ndarray:
    """Run a sampler from index ``start_index`` (default: the last) down to 0; returns the final sample.

    ``key`` is split in two: the first half draws the starting point
    ``temperature * N(0, I)`` of ``shape`` unless ``x_T`` is given (GLIDE's
    upsampler uses temperature 0.997; like the reference, the temperature
    scales only this initial noise), the second is the per-step
    ``PRNGNoise`` unless ``noise`` names another source. The result is a pure
    function of the key. ``progress``, if set, is called as
    ``progress(step, num_steps)`` for every step: the loop then runs in
    slices of about ``PROGRESS_INTERVAL`` seconds, each a call of the same
    compiled program (no host callback is compiled in, so the program is the
    same with and without progress, and it can be stored in JAX's persistent
    compilation cache, which skips programs with host callbacks).
    """
    step_key = None
    if key is not None:
        init_key, step_key = jax.random.split(key)
    if x_T is None:
        if shape is None or key is None:
            raise InputError("give x_T, or both shape and key to draw it")
        x_T = temperature * jax.random.normal(init_key, tuple(shape), jnp.float32)
    elif shape is not None and tuple(shape) != tuple(x_T.shape):
        raise InputError(f"shape {tuple(shape)} does not match x_T {x_T.shape}")
    if noise is None and step_key is not None:
        noise = PRNGNoise(step_key)
    args, static, x_T, num_steps = _loop_arguments(s, model_fn, x_T, noise, sampler, start_index, eta, clip_denoised,
                                                   denoised_fn, cond_fn)
    carry = (x_T, _initial_state(sampler, x_T))
    start = np.int32(num_steps - 1)
    if progress is None:
        return _run_loop(*args, carry, start, np.int32(0), np.int32(num_steps), **static)[0]
    return _run_reporting(args, static, carry, num_steps, progress)


# With a progress callback, the loop runs in slices of about this many seconds (at least one step each).
PROGRESS_INTERVAL = 0.25


def _run_reporting(args, static, carry, num_steps, progress):
    """The loop of ``sample_loop`` in slices, ``progress(step, num_steps)`` called for every step after its slice.

    A call of the compiled loop costs a few milliseconds beyond its steps
    (about 5 ms of CPU for one step of the embedded base), so slices hold as
    many steps as the last slice ran in ``PROGRESS_INTERVAL``: one step of a
    full-size model, several of the small embedded ones.
    """
    start = np.int32(num_steps - 1)
    done, size = 0, 1
    while done < num_steps:
        stop = min(done + size, num_steps)
        began = time.perf_counter()
        carry = _run_loop(*args, carry, start, np.int32(done), np.int32(stop), **static)
        jax.block_until_ready(carry[0])
        per_step = (time.perf_counter() - began) / (stop - done)
        for step in range(done, stop):
            progress(step, num_steps)
        done, size = stop, max(1, int(PROGRESS_INTERVAL / max(per_step, 1e-6)))
    return carry[0]


def sample_trajectory(
    s: Schedule,
    model_fn: ModelFn,
    x_T: jnp.ndarray,
    noise: Optional[NoiseSource],
    *,
    sampler: str = "ddpm",
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
    start_index: Optional[int] = None,
) -> jnp.ndarray:
    """The sample after every step of the loop ``sample_loop`` runs: ``[num_steps, *x_T.shape]``.

    Same step function and draws as ``sample_loop`` from the same ``x_T`` and
    noise source (its last entry is ``sample_loop``'s result), for looking
    inside a loop: the denoising path of an image, or a step-by-step
    comparison with the reference. Its output has the step count in its
    shape, so unlike ``sample_loop`` it compiles once per step count.
    ``noise`` may be None only for the deterministic samplers (DDIM with
    eta=0, DPM-Solver++, UniPC).
    """
    args, static, x_T, num_steps = _loop_arguments(s, model_fn, x_T, noise, sampler, start_index, eta, clip_denoised,
                                                   denoised_fn, cond_fn)
    return _run_trajectory(*args, x_T, num_steps=num_steps, **static)


# ----------------------------------------------------------------------------- the built-in samplers


def _ddpm(s, model_fn, x, t, state, noise, eta, options):
    return p_sample(s, model_fn, x, t, noise, **options)[0], state


def _ddim(s, model_fn, x, t, state, noise, eta, options):
    return ddim_sample(s, model_fn, x, t, noise, eta=eta, **options)[0], state


def _dpm_solver_pp_2m(s, model_fn, x, t, state, noise, eta, options):
    x, _, state = dpm_solver_pp_2m_step(s, model_fn, x, t, state, **options)
    return x, state


def _unipc(s, model_fn, x, t, state, noise, eta, options):
    x, _, state = unipc_step(s, model_fn, x, t, state, **options)
    return x, state


def stochastic_fewstep_sample(
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
    """Meng et al.'s stochastic few-step sampling: x_t -> x_{t-1} by a deterministic DDIM step of twice the
    length (to index t-2; alpha_bar 1, the clean image, below index 0) and one forward-diffusion step back
    up to t-1 with fresh ``noise``. The last step (t = 0) is a plain DDIM step to the clean image. For
    distilled students, whose single steps are accurate over a long stride; returns ``(sample, pred_xstart)``.
    """
    mv = guided_prediction(s, model_fn, x, t, clip_denoised, denoised_fn, cond_fn)
    eps = predict_eps_from_xstart(s, x, t, mv.pred_xstart)
    ab_prev = extract(s.alphas_cumprod_prev, t, x.ndim)  # index t-1
    ab_far = jnp.where(t >= 2, jnp.take(s.alphas_cumprod, jnp.maximum(t - 2, 0)), 1.0)
    ab_far = jnp.where(t >= 1, ab_far, 1.0).reshape((-1,) + (1,) * (x.ndim - 1))  # index t-2
    far = mv.pred_xstart * jnp.sqrt(ab_far) + jnp.sqrt(1.0 - ab_far) * eps
    back = ab_prev / ab_far  # the forward step t-2 -> t-1
    up = jnp.sqrt(back) * far + jnp.sqrt(jnp.maximum(1.0 - back, 0.0)) * noise
    return jnp.where(_not_last(t, x.ndim) > 0, up, far), mv.pred_xstart


def _stochastic_fewstep(s, model_fn, x, t, state, noise, eta, options):
    return stochastic_fewstep_sample(s, model_fn, x, t, noise, **options)[0], state


def _euler_ancestral(s, model_fn, x, t, state, noise, eta, options):
    return euler_ancestral_step(s, model_fn, x, t, noise, **options)[0], state


register_sampler(Sampler("ddpm", _ddpm, "always", description="ancestral sampling with the learned variance"))
register_sampler(Sampler("ddim", _ddim, "eta", description="DDIM (eta=0 deterministic)"))
register_sampler(Sampler("dpm++2m", _dpm_solver_pp_2m, "none", DPMState.init, order=2,
                         description="DPM-Solver++(2M), deterministic multistep"))
register_sampler(Sampler("unipc", _unipc, "none", lambda x: UniPCState.init(x, 2), order=2,
                         description="UniPC-bh2 of order 2, deterministic"))
register_sampler(Sampler("unipc3", _unipc, "none", lambda x: UniPCState.init(x, 3), order=3,
                         description="UniPC-bh2 of order 3, deterministic"))
register_sampler(Sampler("euler_a", _euler_ancestral, "always", description="Euler-ancestral"))
register_sampler(Sampler("stochastic_fewstep", _stochastic_fewstep, "always",
                         description="a DDIM step of twice the length, then noise back up (distilled students)"))
