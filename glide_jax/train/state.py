"""Training state and the optimiser: one pytree that is everything a resumed run needs.

``TrainState`` holds the parameters, their exponential moving average (what
GLIDE samples with), the optimiser state, the step, the run's base PRNG key,
the number of skipped updates and, for a distillation task, the frozen teacher. It is a plain pytree so that it can be sharded,
donated to the jitted step and checkpointed as a whole. Randomness is never
carried forward from step to step: step ``s`` uses ``fold_in(key, s)``, so a
run resumed at any checkpoint draws exactly what an uninterrupted run draws.

``apply_gradients`` is the single place where an update is committed: if the
loss or the gradient is not finite the step still advances (its data has been
consumed) but parameters, EMA and optimiser state are left untouched and
``skipped`` is incremented, the safety valve large diffusion runs need against
rare bf16 overflows or bad batches.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from glide_jax.train.experiment import TrainConfig


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []: completed steps, skipped ones included
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array  # uint32 key data of the run's base key (raw, so it checkpoints as a plain array)
    skipped: jax.Array  # int32 []: updates skipped because the loss or gradient was not finite
    # distillation tasks: the frozen teacher, in the student's parameter structure and layout; None otherwise.
    # apply_gradients never changes it.
    teacher_params: Any = None


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then constant or cosine decay to 0 at ``steps``."""
    warmup = max(int(cfg.warmup_steps), 0)
    if cfg.lr_schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    else:
        after = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps - warmup, 1))
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def _decay_mask(params):
    # Decay matrices and kernels; leave biases, norm gains and embedding-like vectors alone.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay on kernels only) after global-norm clipping."""
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(
        optax.adamw(
            lr_schedule(cfg),
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            mask=_decay_mask if cfg.weight_decay else None,
        )
    )
    return optax.chain(*parts)


def create_state(params: Any, tx: optax.GradientTransformation, seed: int, teacher: bool = False) -> TrainState:
    """Fresh state at step 0; the EMA starts at the parameters themselves, and so does the frozen teacher
    when ``teacher`` (a distillation task's student starts as its teacher)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
        skipped=jnp.zeros((), jnp.int32),
        teacher_params=jax.tree.map(jnp.copy, params) if teacher else None,
    )


def step_key(state: TrainState) -> jax.Array:
    """The PRNG key of the step about to run: a pure function of (seed, step)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def ema_update(ema: Any, params: Any, rate) -> Any:
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema, params)


def ema_decay(cfg: TrainConfig, step: jax.Array):
    """The EMA decay of the update that produces ``step + 1``.

    With ``cfg.ema_warmup`` it is ``min(ema_rate, (1 + step) / (10 + step))``
    (the num_updates rule of TensorFlow's ExponentialMovingAverage): a short run
    with a long-horizon rate would otherwise keep a sizeable share of the random
    initialisation in its average (0.999 ** 1000 = 37% after 1000 steps), and an
    average of parameters that far apart is not a working network.
    """
    if not cfg.ema_warmup:
        return cfg.ema_rate
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(cfg.ema_rate, (1.0 + s) / (10.0 + s))


def apply_gradients(
    state: TrainState, grads: Any, loss: jax.Array, tx: optax.GradientTransformation, ema_rate
) -> Tuple[TrainState, Dict[str, jax.Array]]:
    """Commit one optimiser step, or skip it (and count it) if ``loss`` or ``grads`` are not finite."""
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema_params, params, ema_rate)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

    new_state = state.replace(
        step=state.step + 1,
        params=keep_if_ok(params, state.params),
        ema_params=keep_if_ok(ema, state.ema_params),
        opt_state=keep_if_ok(opt_state, state.opt_state),
        skipped=state.skipped + (~ok).astype(jnp.int32),
    )
    return new_state, {"grad_norm": grad_norm, "update_skipped": (~ok).astype(jnp.int32)}


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
