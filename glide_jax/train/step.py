"""Pure training steps ``(state, batch) -> (state, metrics)`` for the GLIDE U-Nets and the noisy CLIP.

Both steps are functions of their arguments only (randomness comes from
``state_lib.step_key(state)``), so they compile once, can be sharded by
``jax.jit`` in/out shardings, and a resumed run repeats an uninterrupted one
bit for bit.

Diffusion step: the whole batch's timesteps ``t`` and noises are drawn first,
then the batch is optionally cut into ``microbatches`` that run under
``lax.scan`` with their gradients summed. Drawing before cutting makes
gradient accumulation a pure memory/compute trade-off: the update equals the
one-slice update up to float summation order. Slices take every M-th example
(a ``[B/M, M] -> [M, B/M]`` transpose) so every device contributes equally to
every slice when the batch is split over devices. The loss is Improved DDPM's
hybrid loss (``diffusion.losses``); besides the means, every loss term is
logged per quarter of the timestep range, where diffusion losses differ by
orders of magnitude. Caption dropout has happened in the data pipeline (empty
captions), so the step itself is unconditional-agnostic.

CLIP step: GLIDE's noise-aware CLIP sees ``x_t = q_sample(x_0, t)`` at a
uniformly random ``t`` of its own schedule and is trained with the symmetric
contrastive loss under a learned temperature (``logit_scale``, clamped at
log 100 as in CLIP). Rows with identical captions are all correct matches
(targets spread evenly over them), which matters for small caption grammars
where duplicates in a batch are common.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.diffusion.gaussian import q_sample
from glide_jax.diffusion.losses import mse_weights, quartile_means, sample_timesteps, training_losses
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.errors import InputError
from glide_jax.models.clip import ClipModel
from glide_jax.models.unet import GlideUNet
from glide_jax.train import state as state_lib
from glide_jax.train.experiment import TrainConfig
from glide_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], Tuple[TrainState, Metrics]]

LOSS_TERMS = ("loss", "mse", "vb")
MAX_LOGIT_SCALE = math.log(100.0)


def _model_inputs(model_cfg: ModelConfig, batch: Batch) -> Dict[str, jax.Array]:
    """The conditioning entries of a batch that this model reads."""
    unet = model_cfg.unet
    keys = ["image"]
    if unet.text.width:
        keys += ["tokens", "mask"]
    if unet.super_res:
        keys.append("low_res")
    if unet.inpaint:
        keys.append("inpaint_mask")
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing} needed by a {model_cfg.kind} model (has {sorted(batch)})")
    return {k: batch[k] for k in keys}


def split_microbatches(tree: Dict[str, jax.Array], m: int, mesh: Optional[Mesh], batch_axes) -> Dict[str, jax.Array]:
    """``tree``'s ``[B, ...]`` arrays as ``[m, B/m, ...]`` slices, slice k taking every m-th example from k (so
    each device's share of the batch is spread over all slices); ``mesh`` pins the slices' layout."""
    def split(x):
        b = x.shape[0]
        y = x.reshape((b // m, m) + x.shape[1:]).swapaxes(0, 1)
        if mesh is not None:
            spec = PartitionSpec(None, batch_axes, *([None] * (x.ndim - 1)))
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
        return y

    return jax.tree.map(split, tree)


def loss_metrics(t: jax.Array, terms: Mapping[str, jax.Array], num_timesteps: int) -> Metrics:
    """Batch means of the loss terms and their means per quarter of the timestep range."""
    out = {}
    for name in LOSS_TERMS:
        out[name] = jnp.mean(terms[name])
        means, _ = quartile_means(t, terms[name], num_timesteps)
        for q in range(4):
            out[f"{name}_q{q}"] = means[q]
    return out


def make_diffusion_step(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    tx: optax.GradientTransformation,
    *,
    mesh: Optional[Mesh] = None,
    batch_axes: Tuple[str, ...] = ("data", "fsdp"),
) -> StepFn:
    """The GLIDE U-Net train step. ``mesh`` (optional) only pins the microbatch layout."""
    model = GlideUNet(model_cfg.unet)
    schedule = make_schedule(model_cfg.diffusion)
    num_t = schedule.num_timesteps
    m = int(train_cfg.microbatches)
    unet = model_cfg.unet
    schedule_fn = state_lib.lr_schedule(train_cfg)
    axes = tuple(a for a in batch_axes if mesh is not None and a in mesh.axis_names) or None

    def per_sample_losses(params, mb, key):
        def model_fn(x_t, t_model):
            return model.apply(
                {"params": params},
                x_t,
                t_model,
                mb.get("tokens"),
                mb.get("mask"),
                low_res=mb.get("low_res"),
                inpaint_image=mb["image"] if unet.inpaint else None,
                inpaint_mask=mb.get("inpaint_mask"),
                train=True,
                rngs={"dropout": key},
            )

        weight = None
        if train_cfg.mse_weighting != "eps":
            weight = mse_weights(schedule, mb["t"], train_cfg.mse_weighting, train_cfg.mse_weight_clip)
        return training_losses(schedule, model_fn, mb["image"], mb["t"], mb["noise"], train_cfg.loss_type, weight)

    def mean_loss(params, mb, key):
        terms = per_sample_losses(params, mb, key)
        return jnp.mean(terms["loss"]), terms

    grad_fn = jax.value_and_grad(mean_loss, has_aux=True)

    def step(state: TrainState, batch: Batch) -> Tuple[TrainState, Metrics]:
        inputs = _model_inputs(model_cfg, batch)
        x = inputs["image"]
        b = x.shape[0]
        if b % m:
            raise InputError(f"batch of {b} does not split into {m} microbatches")
        key = state_lib.step_key(state)
        k_t, k_noise, k_drop = jax.random.split(key, 3)
        t, _ = sample_timesteps(k_t, b, num_t, train_cfg.high_noise_fraction, int(train_cfg.high_noise_from * num_t))
        inputs = dict(inputs, t=t, noise=jax.random.normal(k_noise, x.shape, jnp.float32))

        if m == 1:
            (loss, terms), grads = grad_fn(state.params, inputs, k_drop)
        else:
            slices = split_microbatches(inputs, m, mesh, axes)

            def body(acc, xs):
                mb, i = xs
                (mb_loss, mb_terms), g = grad_fn(state.params, mb, jax.random.fold_in(k_drop, i))
                acc = jax.tree.map(jnp.add, acc, (mb_loss, g))
                return acc, (mb_terms, mb["t"])

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
            (loss, grads), (terms, t) = jax.lax.scan(body, zeros, (slices, jnp.arange(m)))
            loss, grads = loss / m, jax.tree.map(lambda g: g / m, grads)
            terms = {k: v.reshape(-1) for k, v in terms.items()}
            t = t.reshape(-1)

        new_state, info = state_lib.apply_gradients(state, grads, loss, tx, state_lib.ema_decay(train_cfg, state.step))
        metrics = loss_metrics(t, terms, num_t)
        metrics.update(info, skipped=new_state.skipped, lr=schedule_fn(state.step))
        return new_state, metrics

    return step


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, same: jax.Array, log_scale: jax.Array):
    """Symmetric cross-entropy of ``exp(log_scale) * image_emb @ text_emb.T``; ``same[i, j]``
    marks pairs whose captions are identical (the diagonal at least). Returns (loss, accuracy)."""
    logits = jnp.exp(log_scale) * image_emb @ text_emb.T
    targets = same / jnp.sum(same, axis=1, keepdims=True)
    loss_img = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=1), axis=1)
    loss_txt = -jnp.sum(targets.T * jax.nn.log_softmax(logits.T, axis=1), axis=1)
    loss = 0.5 * (jnp.mean(loss_img) + jnp.mean(loss_txt))
    hits = jnp.take_along_axis(same, jnp.argmax(logits, axis=1)[:, None], axis=1)[:, 0]
    return loss, jnp.mean(hits.astype(jnp.float32))


def make_clip_step(clip_cfg: ClipConfig, train_cfg: TrainConfig, tx: optax.GradientTransformation, *,
                   mesh: Optional[Mesh] = None) -> StepFn:
    """The noise-aware CLIP train step (batches carry ``image``, ``tokens`` and ``lens``). ``mesh`` is
    accepted for a uniform signature and unused: the contrastive loss takes the whole batch at once."""
    model = ClipModel(clip_cfg)
    schedule = make_schedule(clip_cfg.beta_schedule, clip_cfg.n_timesteps)
    schedule_fn = state_lib.lr_schedule(train_cfg)

    def loss_fn(params, batch, t, noise):
        x_t = q_sample(schedule, batch["image"], t, noise)
        img, txt = model.apply({"params": params}, x_t, t, batch["tokens"], batch["lens"])
        tokens, lens = batch["tokens"], batch["lens"]
        same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1) & (lens[:, None] == lens[None, :])
        log_scale = jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE)
        loss, acc = contrastive_loss(img, txt, same.astype(jnp.float32), log_scale)
        return loss, acc

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: Batch) -> Tuple[TrainState, Metrics]:
        x = batch["image"]
        k_t, k_noise = jax.random.split(state_lib.step_key(state))
        t, _ = sample_timesteps(k_t, x.shape[0], schedule.num_timesteps)
        noise = jax.random.normal(k_noise, x.shape, jnp.float32)
        (loss, acc), grads = grad_fn(state.params, batch, t, noise)
        new_state, info = state_lib.apply_gradients(state, grads, loss, tx, state_lib.ema_decay(train_cfg, state.step))
        metrics = {"loss": loss, "accuracy": acc, "logit_scale": jnp.exp(state.params["logit_scale"])}
        metrics.update(info, skipped=new_state.skipped, lr=schedule_fn(state.step))
        return new_state, metrics

    return step
