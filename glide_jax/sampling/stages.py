"""The two sampling stages of one batch: the base model (text to 64x64) and the upsampler (64 to 256).

Each stage builds its model callable (text encoded once), its guidance and its
start, then runs one compiled sampling loop. What a stage is conditioned on
arrives validated and already at the batch's size in a small dataclass, made
once per ``Pipeline.generate`` call (see :mod:`glide_jax.sampling.pipeline`).

Conventions: masks are 1 where the given image is kept and 0 where the model
fills in (GLIDE's convention); classifier-free guidance uses the batch layout
``[cond..., uncond...]`` with the empty caption (or the row's negative prompt)
as unconditional input.

Randomness is per row: a stage gets one PRNG key per image and draws that
image's starting noise, SDEdit noise and per-step noise from it alone
(``RowNoise``), so an image does not depend on the other images of its batch.
The unconditional rows of guidance reuse their conditional row's keys (their
samples are never returned).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion import guidance
from glide_jax.diffusion.noise import RowNoise, row_normal
from glide_jax.diffusion.samplers import sample_loop
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.errors import InputError
from glide_jax.sampling import images
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import StageOptions

ImageAndMask = Tuple[np.ndarray, np.ndarray]  # [B, S, S, 3] in [-1, 1] and [B, S, S, 1] of 0/1 (1 = keep)


def _repeat(array: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    return None if array is None else np.repeat(array, n, 0)


def _repeat_pair(pair: Optional[ImageAndMask], n: int) -> Optional[ImageAndMask]:
    return None if pair is None else (np.repeat(pair[0], n, 0), np.repeat(pair[1], n, 0))


@dataclasses.dataclass(frozen=True)
class BaseConditioning:
    """What the base stage is conditioned on besides the prompts.

    ``init`` (with ``strength``) is an image to start from, noised to that
    fraction of the chain: an edit, or the plain canvas of a truncated start.
    ``inpaint`` is the known image and mask at the base model's size.
    ``clip_guidance_scale`` replaces classifier-free guidance by CLIP guidance.
    ``guidance_interval`` ``(low, high)``, fractions of the chain (0 = the clean
    end, 1 = pure noise), limits classifier-free guidance to those steps.
    ``dynamic_threshold`` is the quantile of dynamic thresholding of x_0 (None: off).
    """

    options: StageOptions
    guidance_scale: float
    clip_guidance_scale: Optional[float] = None
    init: Optional[np.ndarray] = None
    strength: float = 1.0
    inpaint: Optional[ImageAndMask] = None
    guidance_interval: Optional[Tuple[float, float]] = None
    dynamic_threshold: Optional[float] = None

    @property
    def classifier_free(self) -> bool:
        return self.guidance_scale != 1.0 and self.clip_guidance_scale is None

    def repeated(self, n: int) -> "BaseConditioning":
        """The same conditioning with its images repeated for a batch of ``n`` (they are given once)."""
        return dataclasses.replace(self, init=_repeat(self.init, n), inpaint=_repeat_pair(self.inpaint, n))


@dataclasses.dataclass(frozen=True)
class UpsampleConditioning:
    """What the upsampler is conditioned on besides the prompts and its low-resolution input:
    the known image and mask at its size when inpainting (pasted into every x0 estimate)."""

    options: StageOptions
    inpaint: Optional[ImageAndMask] = None

    def repeated(self, n: int) -> "UpsampleConditioning":
        return dataclasses.replace(self, inpaint=_repeat_pair(self.inpaint, n))


def image_keys(seed: Union[int, jax.Array], indices: Sequence[int]) -> jax.Array:
    """The PRNG key of each image index of a request: ``fold_in(key(seed), index)``."""
    key = jax.random.key(int(seed)) if isinstance(seed, (int, np.integer)) else seed
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(list(indices), jnp.uint32))


def stage_keys(keys: jax.Array, stage: int) -> jax.Array:
    """Each image's key for one stage (0 base, 1 upsampler) from its image key."""
    return jax.vmap(lambda key: jax.random.fold_in(key, stage))(keys)


def _row_keys(keys: jax.Array, copies: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Per-row keys for the start, the per-step noise and SDEdit noise, repeated for guidance's halves."""
    def part(j):
        return jnp.concatenate([stage_keys(keys, j)] * copies)

    return part(0), part(1), part(2)


def guided_timesteps(interval: Tuple[float, float], steps: int) -> Tuple[int, int]:
    """The model timesteps ``[low, high]`` of a guidance interval given as fractions of a ``steps``-long chain."""
    low, high = interval
    return int(np.floor(low * (steps - 1))), int(np.ceil(high * (steps - 1)))


def sample_base(model: LoadedModel, prompts: Sequence[str], keys: jax.Array, conditioning: BaseConditioning, *,
                negatives: Optional[Sequence[str]] = None, clip: Optional[LoadedModel] = None,
                progress=None) -> jax.Array:
    """Base-size samples ``[B, S, S, 3]`` in [-1, 1], one per prompt, row i from ``keys[i]``.

    ``negatives`` are the unconditional captions of classifier-free guidance, one
    per prompt (default: empty captions).
    """
    family, config = model.family, model.config
    size = family.image_size(config)
    opts = conditioning.options
    n = len(prompts)
    # A guidance-distilled student reads the guidance scale as its input w: one conditional evaluation per step.
    weight_input = family.takes_guidance_weight(config) and conditioning.clip_guidance_scale is None
    cfg_guided = conditioning.classifier_free and not weight_input
    negatives = [""] * n if negatives is None else list(negatives)
    if len(negatives) != n:
        raise InputError(f"{len(negatives)} negative prompts for {n} prompts")
    if weight_input and any(negatives):
        raise InputError("this model guides itself (it takes the guidance weight as an input): its "
                         "unconditional branch is the empty caption, so it takes no negative prompts")
    rows = list(prompts) + negatives if cfg_guided else list(prompts)
    copies = 2 if cfg_guided else 1
    tokens, mask = model.tokens(rows)
    extra, denoised_fn = {}, None
    if weight_input:
        extra["guidance_weight"] = np.full((n,), conditioning.guidance_scale, np.float32)
        if conditioning.guidance_interval is not None:
            extra["guidance_interval"] = np.asarray(
                guided_timesteps(conditioning.guidance_interval, family.diffusion_config(config).steps), np.int32)
    elif family.takes_guidance_weight(config):  # CLIP guidance steers the student's plain conditional output
        extra["guidance_weight"] = np.ones((n * copies,), np.float32)
    if conditioning.inpaint is not None:
        image, keep = conditioning.inpaint
        extra.update(inpaint_image=np.concatenate([image] * copies), inpaint_mask=np.concatenate([keep] * copies))
        denoised_fn = guidance.inpaint_denoised_fn(extra["inpaint_image"], extra["inpaint_mask"])
    if conditioning.dynamic_threshold is not None:
        denoised_fn = guidance.chain_denoised(guidance.dynamic_threshold_fn(conditioning.dynamic_threshold),
                                              denoised_fn)
    model_fn = family.model_fn(config, model.params, tokens, mask, **extra)
    if cfg_guided and conditioning.guidance_interval is not None:
        half = {k: v[:n] for k, v in extra.items()}
        cond_fn_only = family.model_fn(config, model.params, tokens[:n], mask[:n], **half)
        low, high = guided_timesteps(conditioning.guidance_interval, family.diffusion_config(config).steps)
        model_fn = guidance.interval_guidance(model_fn, cond_fn_only, conditioning.guidance_scale, low, high)
    elif cfg_guided:
        model_fn = guidance.classifier_free_guidance(model_fn, conditioning.guidance_scale)
    cond_fn = None
    if conditioning.clip_guidance_scale is not None:
        clip_tokens, clip_lengths = clip.tokens(prompts)
        grad = clip.family.guidance_grad(clip.config, clip.params, clip_tokens, clip_lengths, size)
        cond_fn = guidance.clip_guidance(grad, conditioning.clip_guidance_scale)
    schedule = make_schedule(family.diffusion_config(config), respacing=opts.respacing)
    row_shape = (size, size, family.channels(config))
    start_keys, step_keys, edit_keys = _row_keys(keys, copies)
    start = None
    if conditioning.init is not None:
        init_rows = np.concatenate([conditioning.init] * copies)
        start, x_T = guidance.sdedit_start(schedule, init_rows, conditioning.strength,
                                           noise=row_normal(edit_keys, row_shape))
    else:
        x_T = opts.temperature * row_normal(start_keys, row_shape)
    out = sample_loop(schedule, model_fn, sampler=opts.sampler, x_T=x_T, noise=RowNoise(step_keys),
                      start_index=start, eta=opts.eta, denoised_fn=denoised_fn, cond_fn=cond_fn, progress=progress)
    return out[:n]


def sample_upsample(model: LoadedModel, prompts: Sequence[str], low_res, keys: jax.Array,
                    conditioning: UpsampleConditioning, *, progress=None) -> jax.Array:
    """Super-resolved samples ``[B, S, S, 3]`` in [-1, 1] of ``low_res`` (one per prompt, row i from ``keys[i]``)."""
    family, config = model.family, model.config
    size = family.image_size(config)
    opts = conditioning.options
    tokens, mask = model.tokens(prompts)
    low_res = np.asarray(images.to_model(images.to_uint8(low_res)))  # quantise to 8 bits like the reference
    extra, denoised_fn = {"low_res": low_res}, None
    if conditioning.inpaint is not None:
        # The known pixels are pasted into every x0 prediction with any upsampler; an inpainting
        # upsampler also sees them (and the mask) as input channels.
        if family.is_inpaint(config):
            extra.update(inpaint_image=conditioning.inpaint[0], inpaint_mask=conditioning.inpaint[1])
        denoised_fn = guidance.inpaint_denoised_fn(*conditioning.inpaint)
    model_fn = family.model_fn(config, model.params, tokens, mask, **extra)
    schedule = make_schedule(family.diffusion_config(config), respacing=opts.respacing)
    row_shape = (size, size, family.channels(config))
    start_keys, step_keys, edit_keys = _row_keys(keys, 1)
    start = None
    if opts.start < 1.0:
        enlarged = jax.image.resize(jnp.asarray(low_res), (len(prompts),) + row_shape, "linear")
        start, x_T = guidance.sdedit_start(schedule, enlarged, opts.start, noise=row_normal(edit_keys, row_shape))
    else:
        x_T = opts.temperature * row_normal(start_keys, row_shape)
    return sample_loop(schedule, model_fn, sampler=opts.sampler, x_T=x_T, noise=RowNoise(step_keys),
                       start_index=start, eta=opts.eta, denoised_fn=denoised_fn, progress=progress)
