"""Guidance and editing on top of any ``model_fn``: classifier-free guidance
(optionally only within an interval of the chain), dynamic thresholding of
x_0, inpainting, SDEdit starts and CLIP guidance.

Each helper returns a ``jax.tree_util.Partial`` so that its data (guidance
scale, inpainting image and mask, the wrapped model's parameters) are pytree
leaves: the compiled sampling loops of ``samplers`` are then reused when only
that data changes. The wrapped callables keep the sampler conventions:
``model_fn(x, t_model)``, ``denoised_fn(x0)``, ``cond_fn(x, t_model)``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from glide_jax.diffusion.gaussian import q_sample
from glide_jax.diffusion.schedule import Schedule, pad_schedule
from glide_jax.errors import InputError


def _apply_cfg(model_fn, scale, x, t):
    # Rows [cond..., uncond...]: both halves are run on the *first* half's x,
    # so the two predictions differ only through their conditioning.
    half = x[: x.shape[0] // 2]
    out = model_fn(jnp.concatenate([half, half], axis=0), t)
    c = x.shape[-1]
    eps, rest = out[..., :c], out[..., c:]
    cond_eps, uncond_eps = jnp.split(eps, 2, axis=0)
    guided = uncond_eps + scale * (cond_eps - uncond_eps)
    return jnp.concatenate([jnp.concatenate([guided, guided], axis=0), rest], axis=-1)


def classifier_free_guidance(model_fn: Callable, scale: float) -> Partial:
    """Wrap a conditional ``model_fn`` for classifier-free guidance as in GLIDE's notebooks.

    The batch must be ``[cond_0..cond_{B-1}, uncond_0..uncond_{B-1}]`` with the
    conditioning (e.g. tokens, where the second half encodes the empty prompt
    or a negative prompt) closed over in ``model_fn`` in the same order. The
    guided noise ``uncond + scale * (cond - uncond)`` is returned for both
    halves, the variance channels of each row unchanged. Only the first B rows
    of the samples are meaningful: the second half is stepped with the guided
    eps too but from its own x, as the reference does.
    """
    if not isinstance(model_fn, Partial):
        model_fn = Partial(model_fn)
    return Partial(_apply_cfg, model_fn, jnp.asarray(scale, jnp.float32))


def _apply_cfg_within(model_fn, cond_model_fn, scale, low, high, x, t):
    # One decision per step (every row is at the same t). Outside [low, high] only the
    # conditional half is run, and its prediction stands for both halves.
    inside = (t[0] >= low) & (t[0] <= high)

    def conditional_only(x):
        half = x[: x.shape[0] // 2]
        out = cond_model_fn(half, t[: half.shape[0]])
        return jnp.concatenate([out, out], axis=0)

    return jax.lax.cond(inside, lambda x: _apply_cfg(model_fn, scale, x, t), conditional_only, x)


def interval_guidance(model_fn: Callable, cond_model_fn: Callable, scale: float, low: int, high: int) -> Partial:
    """Classifier-free guidance applied only while the model's timestep lies in ``[low, high]``.

    Elsewhere the step uses the plain conditional prediction and runs the
    network on the conditional half only (``cond_model_fn``, the same model
    with the first half's conditioning), so each step outside the interval
    costs half a guided step. Guidance at the noisiest steps mostly pushes
    samples towards a few modes and at the last ones changes little
    (Kynkäänniemi et al. 2024); an interval keeps its effect where it helps.
    """
    if not 0 <= low <= high:
        raise InputError(f"guidance interval must satisfy 0 <= low <= high, got [{low}, {high}]")
    return Partial(_apply_cfg_within, _partial(model_fn), _partial(cond_model_fn), jnp.asarray(scale, jnp.float32),
                   jnp.asarray(low, jnp.int32), jnp.asarray(high, jnp.int32))


def _partial(fn: Callable) -> Partial:
    return fn if isinstance(fn, Partial) else Partial(fn)


def _dynamic_threshold(quantile, x0):
    # Imagen's rule: s = max(1, the quantile of |x0| per image); x0 -> clip(x0, -s, s) / s.
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, quantile, axis=1), 1.0).reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.clip(x0, -s, s) / s


def dynamic_threshold_fn(quantile: float) -> Partial:
    """``denoised_fn`` of dynamic thresholding (Saharia et al. 2022) at ``quantile`` (e.g. 0.995).

    High guidance scales push x_0 predictions past [-1, 1]; clamping them
    saturates colours, while dividing each image by its own high quantile of
    |x_0| (when above 1) keeps their relative values.
    """
    if not 0.0 < quantile <= 1.0:
        raise InputError(f"dynamic threshold quantile must be in (0, 1], got {quantile}")
    return Partial(_dynamic_threshold, jnp.asarray(quantile, jnp.float32))


def _chain(first, second, x0):
    return second(first(x0))


def chain_denoised(*fns: Optional[Callable]) -> Optional[Partial]:
    """One ``denoised_fn`` applying ``fns`` in order (Nones skipped); None if there are none."""
    fns = [_partial(fn) for fn in fns if fn is not None]
    if not fns:
        return None
    out = fns[0]
    for fn in fns[1:]:
        out = Partial(_chain, out, fn)
    return out


def _paste(image, mask, x0):
    return x0 * (1 - mask) + image * mask


def inpaint_denoised_fn(image: jnp.ndarray, mask: jnp.ndarray) -> Partial:
    """``denoised_fn`` that replaces every x_0 prediction by ``image`` where ``mask`` is 1.

    ``image`` is ``[B, H, W, C]`` and ``mask`` ``[B, H, W, 1]`` (1 = known,
    keep); both must match the sampled batch, so for classifier-free guidance
    repeat them for the unconditional half.
    """
    return Partial(_paste, jnp.asarray(image, jnp.float32), jnp.asarray(mask, jnp.float32))


def sdedit_start_index(num_timesteps: int, strength: float) -> int:
    """The (respaced) index a chain run for ``strength`` of its ``num_timesteps`` starts at."""
    return min(max(int(round(strength * num_timesteps)) - 1, 0), num_timesteps - 1)


def sdedit_start(
    s: Schedule,
    image: jnp.ndarray,
    strength: float,
    *,
    key: Optional[jax.Array] = None,
    noise: Optional[jnp.ndarray] = None,
) -> Tuple[int, jnp.ndarray]:
    """Noise ``image`` for SDEdit: returns ``(start_index, x_t)`` for ``sample_loop``.

    ``strength`` in (0, 1] is the fraction of the (respaced) chain to run:
    1 starts from almost pure noise, small values keep the image's layout
    and colours. Pass ``start_index`` and ``x_T=x_t`` to a sampling loop.
    """
    if not 0.0 < strength <= 1.0:
        raise InputError(f"strength must be in (0, 1], got {strength}")
    start = sdedit_start_index(s.num_timesteps, strength)
    image = jnp.asarray(image, jnp.float32)
    if noise is None:
        if key is None:
            raise InputError("give a key or the noise to add")
        noise = jax.random.normal(key, image.shape, jnp.float32)
    t = jnp.full((image.shape[0],), start, jnp.int32)
    # The padded tables have one shape for every step count, so this noising compiles once.
    return start, q_sample(pad_schedule(s), image, t, noise)


def _scaled_grad(grad_fn, scale, x, t):
    return scale * grad_fn(x, t)


def clip_guidance(clip_grad: Callable, scale: float = 1.0) -> Partial:
    """``cond_fn`` for CLIP guidance from ``clip_grad(x, t_clip) -> d similarity / dx``.

    The samplers call ``cond_fn(x, timestep_map[t])``, i.e. the noise-aware
    CLIP sees the original timestep, as in the reference. ``scale`` multiplies
    the gradient (GLIDE's notebook uses 3.0, folded into its ``cond_fn``).
    """
    if not isinstance(clip_grad, Partial):
        clip_grad = Partial(clip_grad)
    return Partial(_scaled_grad, clip_grad, jnp.asarray(scale, jnp.float32))


def _grad_of_sum(similarity_fn, x, t):
    return jax.grad(lambda y: jnp.sum(similarity_fn(y, t)))(x)


def similarity_gradient(similarity_fn: Callable) -> Partial:
    """Turn ``similarity_fn(x, t) -> [B]`` (e.g. scaled CLIP logits per row) into its x-gradient.

    Rows are independent, so the gradient of the summed similarity is each
    row's own gradient. Combine with ``clip_guidance`` for a ``cond_fn``.
    """
    if not isinstance(similarity_fn, Partial):
        similarity_fn = Partial(similarity_fn)
    return Partial(_grad_of_sum, similarity_fn)
