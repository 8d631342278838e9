"""Distilling GLIDE's base model to a few steps: guided distillation, then progressive halving.

Two training tasks, after Meng et al. 2023 ("On Distillation of Guided
Diffusion Models") and Salimans & Ho 2022 ("Progressive Distillation"):

* ``distill-guidance``: a student with a guidance-weight input
  (``unet.guidance_embed``) learns, in one evaluation, what classifier-free
  guidance computes from two: ``eps_u + w (eps_c - eps_u)`` of the teacher, for
  ``w`` uniform in ``[train.distill.guidance_min, guidance_max]``, at a
  uniformly random timestep of the full chain, on training images noised by
  ``q_sample``. ``eps_u`` reads the empty caption (all positions masked, which
  is what caption dropout feeds the model, so the text transformer must have
  ``text.padding``). The student starts as the teacher with the zero-initialised
  guidance MLP (``warm_start.guidance_embed_params``): at step 0 it computes
  the teacher's conditional output.
* ``distill-progressive``: a student of ``student_steps`` DDIM steps learns
  what the teacher (the previous round: ``teacher_steps`` = twice as many)
  does in two deterministic DDIM steps, both on diffusers' trailing spacing
  (``trailingN``: the student's grid is every second point of the teacher's,
  and both end on the clean image), over the whole chain or, with
  ``train.distill.chain``, over its first timesteps only (``trailingN:chain``):
  a student whose sampling starts from a noised canvas (``start`` < 1) then
  never meets the noisiest steps, where an eps output cannot express the
  image it should jump to (``x = (z - sigma eps) / alpha`` with alpha ~ 5e-5
  at t = 999 multiplies every error in eps by ~2e4). The teacher is itself guidance
  conditioned and is run at the student's ``w``. The student starts as the
  teacher.

In both the teacher is ``train.init_from`` (a workdir's EMA weights, a model
directory or a name); it is kept, frozen and sharded like the student, in the
train state (``TrainState.teacher_params``), so a killed run resumes with it
from its own checkpoint. Since the student starts as the teacher, the
teacher is kept in the student's parameter structure: with the guidance MLP's
last layer at zero it computes exactly the teacher's outputs.

Both steps accumulate gradients over ``train.microbatches`` slices of the
batch like the diffusion step (``glide_jax.train.step``): the random draws
(timestep index, noise, w) are made for the whole batch first, and each slice
computes its teacher targets and student gradients in turn, so a slice's
teacher and student activations are all that is live at once.

Parameterisation. GLIDE's U-Net outputs the noise (eps) and, in its other
channels, the interpolation value of its learned variance. The student keeps
that output: its eps channels are what is distilled, and its variance channels
are trained to keep the teacher's (an unweighted MSE to the teacher's
conditional variance output; the deterministic samplers of a distilled student
never read them, the ancestral one would). Progressive distillation's target is
the image ``x~`` that makes one student DDIM step land where the teacher's two
land (Salimans & Ho's x-prediction target form) with truncated-SNR weighting
``max(SNR, 1) |x^ - x~|^2``. With an eps output ``x^ = (z - sigma eps^) / alpha``,
so that loss equals ``max(1, 1/SNR) |eps^ - eps~|^2`` with ``eps~`` the noise
implied by ``x~``; the eps form is computed, its weight capped at
``train.mse_weight_clip`` (``diffusion.losses.mse_weights``, "truncated_snr"),
because near the end of GLIDE's cosine chain ``alpha`` is ~5e-5 and ``1/SNR``
~4e8. The teacher's DDIM steps clip their x_0 predictions to [-1, 1] as
sampling does, so the student learns the chain that sampling runs.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from glide_jax.config import ModelConfig
from glide_jax.diffusion.gaussian import extract, q_sample, split_model_output
from glide_jax.diffusion.losses import mean_over_pixels, mse_weights, quartile_means, sample_timesteps
from glide_jax.diffusion.samplers import ddim_sample
from glide_jax.diffusion.schedule import Schedule, make_schedule
from glide_jax.errors import InputError
from glide_jax.models.unet import GlideUNet
from glide_jax.train import state as state_lib
from glide_jax.train import warm_start
from glide_jax.train.experiment import TrainConfig
from glide_jax.train.state import TrainState
from glide_jax.train.step import split_microbatches
from glide_jax.train.tasks import Task, register_task

Metrics = Dict[str, jax.Array]
StepFn = Callable[[TrainState, Dict[str, jax.Array]], Tuple[TrainState, Metrics]]


def check_distill_config(cfg) -> None:
    """Refuse an experiment a distillation task cannot run (called when the config is built)."""
    unet = cfg.model.unet
    if not unet.guidance_embed:
        raise InputError(f"task {cfg.task!r} trains a guidance-conditioned student: set model.unet.guidance_embed=true")
    if unet.inpaint or unet.super_res:
        raise InputError(f"task {cfg.task!r} distils a text-to-image base model, not a {cfg.model.kind} model")
    if not unet.text.width or not unet.text.padding:
        raise InputError(f"task {cfg.task!r} needs a text-conditional model with text.padding (its unconditional "
                         "input is the fully masked caption)")


def trailing_schedules(model_cfg: ModelConfig, teacher_steps: int, student_steps: int,
                       chain: int = 0) -> Tuple[Schedule, Schedule]:
    """The teacher's and student's respaced schedules; the student's timesteps are every second teacher one.
    ``chain`` > 0 spans both grids over the first ``chain`` timesteps only (``trailingN:chain``)."""
    if teacher_steps != 2 * student_steps:
        raise InputError(f"train.distill.teacher_steps ({teacher_steps}) must be twice student_steps "
                         f"({student_steps}): each progressive distillation round halves the steps")
    over = f":{chain}" if chain else ""
    teacher = make_schedule(model_cfg.diffusion, respacing=f"trailing{teacher_steps}{over}")
    student = make_schedule(model_cfg.diffusion, respacing=f"trailing{student_steps}{over}")
    if teacher.num_timesteps != teacher_steps or student.num_timesteps != student_steps or \
            not bool(jnp.all(teacher.timestep_map[1::2] == student.timestep_map)):
        raise InputError(f"{student_steps} trailing steps are not every second one of {teacher_steps} on "
                         f"{model_cfg.diffusion.steps} diffusion steps; choose step counts dividing it")
    return teacher, student


def one_step_eps(s: Schedule, z: jax.Array, i: jax.Array, z_end: jax.Array) -> jax.Array:
    """The noise prediction whose deterministic DDIM step takes ``z`` at index ``i`` straight to ``z_end`` at
    index ``i - 2`` (alpha_bar 1 below index 0): the eps form of Salimans & Ho's target ``x~``."""
    ab, ab_end = extract(s.alphas_cumprod, i, z.ndim), extract(s.alphas_cumprod_prev, i - 1, z.ndim)
    alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    alpha_end, sigma_end = jnp.sqrt(ab_end), jnp.sqrt(1.0 - ab_end)
    ratio = sigma_end / sigma
    x_target = (z_end - ratio * z) / (alpha_end - ratio * alpha)
    return (z - alpha * x_target) / sigma


def _draw_guidance(key: jax.Array, b: int, train_cfg: TrainConfig) -> jax.Array:
    d = train_cfg.distill
    return jax.random.uniform(key, (b,), jnp.float32, d.guidance_min, d.guidance_max)


def _metrics(loss_terms: Dict[str, jax.Array], t: jax.Array, num_timesteps: int) -> Metrics:
    out = {name: jnp.mean(value) for name, value in loss_terms.items()}
    means, _ = quartile_means(t, loss_terms["loss"], num_timesteps)
    out.update({f"loss_q{q}": means[q] for q in range(4)})
    return out


def _make_step(model_cfg: ModelConfig, train_cfg: TrainConfig, tx: optax.GradientTransformation,
               draw: Callable, targets: Callable, num_timesteps: int, mesh=None,
               batch_axes: Tuple[str, ...] = ("data", "fsdp")) -> StepFn:
    """A distillation step around ``draw(key, batch) -> {"t", "noise", "w"}`` (the whole batch's random
    draws: schedule index, noise, guidance weight) and ``targets(teacher, inputs) -> (x_t, t_model, eps_target,
    var_target, weight)`` for a batch or slice of ``inputs`` (image, tokens, mask and the draws),
    ``teacher(x, t_model, tokens, mask, w)`` being the frozen teacher's output.

    With ``train.microbatches`` m > 1 the batch runs in m slices under ``lax.scan`` (teacher targets and
    student gradients per slice, gradients summed), so the activations are those of one slice. Everything
    random is drawn for the whole batch before it is cut, so the update equals the one-slice update up to
    summation order (dropout aside, which draws per slice)."""
    model = GlideUNet(model_cfg.unet)
    channels = model_cfg.unet.in_channels
    schedule_fn = state_lib.lr_schedule(train_cfg)
    m = int(train_cfg.microbatches)
    axes = tuple(a for a in batch_axes if mesh is not None and a in mesh.axis_names) or None

    def loss_fn(params, mb, x_t, t_model, eps_target, var_target, weight, key):
        out = model.apply({"params": params}, x_t, t_model, mb["tokens"], mb["mask"], guidance_weight=mb["w"],
                          train=True, rngs={"dropout": key})
        eps, var = split_model_output(out, channels)
        eps_mse = mean_over_pixels((eps - eps_target) ** 2)
        var_mse = mean_over_pixels((var - var_target) ** 2)
        per_sample = weight * eps_mse + var_mse
        return jnp.mean(per_sample), {"loss": per_sample, "eps_mse": eps_mse, "var_mse": var_mse}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def slice_grads(state: TrainState, mb, key):
        def teacher(x, t_model, tokens, mask, w):
            return model.apply({"params": state.teacher_params}, x, t_model, tokens, mask, guidance_weight=w)

        x_t, t_model, eps_target, var_target, weight = targets(teacher, mb)
        eps_target, var_target = jax.lax.stop_gradient(eps_target), jax.lax.stop_gradient(var_target)
        return grad_fn(state.params, mb, x_t, t_model, eps_target, var_target, weight, key)

    def step(state: TrainState, batch) -> Tuple[TrainState, Metrics]:
        if state.teacher_params is None:
            raise InputError("a distillation step needs a train state with teacher_params")
        b = batch["image"].shape[0]
        if b % m:
            raise InputError(f"batch of {b} does not split into {m} microbatches")
        k_draw, k_drop = jax.random.split(state_lib.step_key(state))
        inputs = {k: batch[k] for k in ("image", "tokens", "mask")}
        inputs.update(draw(k_draw, batch))
        if m == 1:
            (loss, terms), grads = slice_grads(state, inputs, k_drop)
            t = inputs["t"]
        else:
            def body(acc, xs):
                mb, i = xs
                (mb_loss, mb_terms), g = slice_grads(state, mb, jax.random.fold_in(k_drop, i))
                return jax.tree.map(jnp.add, acc, (mb_loss, g)), (mb_terms, mb["t"])

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
            slices = split_microbatches(inputs, m, mesh, axes)
            (loss, grads), (terms, t) = jax.lax.scan(body, zeros, (slices, jnp.arange(m)))
            loss, grads = loss / m, jax.tree.map(lambda g: g / m, grads)
            terms, t = {k: v.reshape(-1) for k, v in terms.items()}, t.reshape(-1)
        new_state, info = state_lib.apply_gradients(state, grads, loss, tx, state_lib.ema_decay(train_cfg, state.step))
        metrics = _metrics(terms, t, num_timesteps)
        metrics.update(info, skipped=new_state.skipped, lr=schedule_fn(state.step), guidance=jnp.mean(inputs["w"]))
        return new_state, metrics

    return step


def make_guidance_distill_step(model_cfg: ModelConfig, train_cfg: TrainConfig, tx: optax.GradientTransformation, *,
                               mesh=None) -> StepFn:
    """The ``distill-guidance`` step: the student's eps at ``w`` matches the teacher's guided eps at ``w``.
    ``mesh`` (optional) only pins the microbatch layout."""
    schedule = make_schedule(model_cfg.diffusion)
    num_t = schedule.num_timesteps
    channels = model_cfg.unet.in_channels

    def draw(key, batch):
        x = batch["image"]
        k_t, k_noise, k_w = jax.random.split(key, 3)
        t, _ = sample_timesteps(k_t, x.shape[0], num_t)
        return {"t": t, "noise": jax.random.normal(k_noise, x.shape, jnp.float32),
                "w": _draw_guidance(k_w, x.shape[0], train_cfg)}

    def targets(teacher, mb):
        t, w, tokens, mask = mb["t"], mb["w"], mb["tokens"], mb["mask"]
        b = t.shape[0]
        x_t = q_sample(schedule, mb["image"], t, mb["noise"])
        t_model = jnp.take(schedule.timestep_map, t)
        # One teacher call on [conditional; unconditional] rows, as sampling with guidance does.
        both = teacher(jnp.concatenate([x_t, x_t]), jnp.concatenate([t_model, t_model]),
                       jnp.concatenate([tokens, jnp.zeros_like(tokens)]),
                       jnp.concatenate([mask, jnp.zeros_like(mask)]), jnp.concatenate([w, w]))
        eps_both, var_both = split_model_output(both, channels)
        eps_c, eps_u = eps_both[:b], eps_both[b:]
        guided = eps_u + w[:, None, None, None] * (eps_c - eps_u)
        return x_t, t_model, guided, var_both[:b], jnp.ones((b,), jnp.float32)

    return _make_step(model_cfg, train_cfg, tx, draw, targets, num_t, mesh)


def make_progressive_distill_step(model_cfg: ModelConfig, train_cfg: TrainConfig,
                                  tx: optax.GradientTransformation, *, mesh=None) -> StepFn:
    """The ``distill-progressive`` step: one student DDIM step of twice the length matches two of the teacher's
    (module docstring: target, weighting, variance channels). ``mesh`` (optional) only pins the microbatch
    layout."""
    d = train_cfg.distill
    teacher_s, _ = trailing_schedules(model_cfg, d.teacher_steps, d.student_steps, d.chain)
    channels = model_cfg.unet.in_channels
    clip = train_cfg.mse_weight_clip

    def draw(key, batch):
        x = batch["image"]
        k_t, k_noise, k_w = jax.random.split(key, 3)
        j = jax.random.randint(k_t, (x.shape[0],), 0, d.student_steps, jnp.int32)
        return {"t": 2 * j + 1,  # the student's index j is the teacher's index 2j+1
                "noise": jax.random.normal(k_noise, x.shape, jnp.float32),
                "w": _draw_guidance(k_w, x.shape[0], train_cfg)}

    def targets(teacher, mb):
        i, w, tokens, mask = mb["t"], mb["w"], mb["tokens"], mb["mask"]
        z = q_sample(teacher_s, mb["image"], i, mb["noise"])
        t_model = jnp.take(teacher_s.timestep_map, i)
        first = teacher(z, t_model, tokens, mask, w)
        zeros = jnp.zeros_like(z)
        z1 = ddim_sample(teacher_s, lambda *_: first, z, i, zeros, eta=0.0)[0]
        z2 = ddim_sample(teacher_s, lambda x_, t_: teacher(x_, t_, tokens, mask, w), z1, i - 1, zeros, eta=0.0)[0]
        eps_target = one_step_eps(teacher_s, z, i, z2)
        weight = mse_weights(teacher_s, i, "truncated_snr", clip)
        return z, t_model, eps_target, split_model_output(first, channels)[1], weight

    return _make_step(model_cfg, train_cfg, tx, draw, targets, teacher_s.num_timesteps, mesh)


register_task(Task("distill-guidance", "unet", ("base",), start=warm_start.guidance_embed_params,
                   needs_init_from=True, description="guided distillation (a student that takes the guidance weight)",
                   make_step=make_guidance_distill_step, teacher=True, check_config=check_distill_config))
register_task(Task("distill-progressive", "unet", ("base",), start=warm_start.guidance_embed_params,
                   needs_init_from=True, description="one round of progressive distillation (half the steps)",
                   make_step=make_progressive_distill_step, teacher=True, check_config=check_distill_config))
