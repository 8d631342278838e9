"""Text → 64 → 256 sampling, inpainting, sketch editing and CLIP guidance in one call.

``Pipeline`` holds the loaded models (base, optional upsampler, optional
noise-aware CLIP); ``Pipeline.generate`` is what the CLI, the notebooks and
``glide_jax.sample`` call. It rewrites the prompts (the base model's
``prompt_rewrites``, or the caller's rewriter), validates every input and
prepares the conditioning once, then runs each batch through the stages of
:mod:`glide_jax.sampling.stages` (each one compiled sampling loop) and returns
uint8 images. Models come from :mod:`glide_jax.hub.registry` (``load_pipeline``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.errors import InputWarning
from glide_jax.sampling import images
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import (BASE_DEFAULT, DEFAULT, GUIDANCE_DEFAULT, UPSAMPLE_DEFAULT, StageOptions,
                                        guided_part, resolve_stage)
from glide_jax.sampling.progress import ProgressBar
from glide_jax.sampling.prompt_check import prompt_messages, text_context
from glide_jax.sampling.ranking import rank_candidates
from glide_jax.sampling.rewrites import PromptRewriter, rewrite_all
from glide_jax.sampling.stages import (BaseConditioning, UpsampleConditioning, sample_base, sample_upsample,
                                      stage_keys)

__all__ = ["BASE_DEFAULT", "DEFAULT", "GUIDANCE_DEFAULT", "UPSAMPLE_DEFAULT", "LoadedModel", "Pipeline",
           "StageOptions", "resolve_stage"]


def _check_prompts(prompts) -> List[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one caption")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings, got {type(bad[0]).__name__}")
    return prompts


SEED_RANGE = 2 ** 32  # a JAX key holds 32 bits of an integer seed; larger ones would alias smaller ones


def make_key(seed: Union[int, jax.Array]) -> jax.Array:
    """The PRNG key of ``seed``: an integer in [0, 2**32) or a JAX key, which is used as given."""
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"seed must be an integer or a JAX key, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        if not 0 <= int(seed) < SEED_RANGE:
            raise ValueError(f"seed must be an integer in [0, {SEED_RANGE - 1}], got {int(seed)} "
                             "(a JAX key keeps 32 bits, so a larger seed would repeat a smaller one)")
        return jax.random.key(int(seed))
    return seed


def warn_about_prompts(prompts: Sequence[str], model: LoadedModel) -> None:
    """Say, in one line per prompt, when a prompt is probably not read as meant (see ``prompt_check``)."""
    for message in prompt_messages(prompts, model.tokenizer, text_context(model.config)):
        warnings.warn(message, InputWarning, stacklevel=3)


def _check_negatives(negative_prompt, n: int) -> List[str]:
    """One unconditional caption per prompt: a string applies to all, a list gives one each."""
    if negative_prompt is None:
        return [""] * n
    if isinstance(negative_prompt, str):
        return [negative_prompt] * n
    negatives = list(negative_prompt)
    if len(negatives) != n or not all(isinstance(p, str) for p in negatives):
        raise ValueError(f"negative_prompt must be a string or {n} strings (one per prompt), got {len(negatives)} "
                         "values")
    return negatives


def image_keys(seed: Union[int, jax.Array], indices: Sequence[int]) -> jax.Array:
    """The PRNG key of each image index of a request: ``fold_in(key(seed), index)``."""
    key = make_key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(list(indices), jnp.uint32))


def _check_family(model: Optional[LoadedModel], role: str, family: str) -> None:
    if model is not None and model.family.name != family:
        raise ValueError(f"the {role} must be a {family} model, got a {model.family.name} model"
                         + (f" ({model.source})" if model.source else ""))


def _image_at(image: np.ndarray, size: int) -> np.ndarray:
    """``[1, size, size, 3]`` in [-1, 1] of a uint8 image."""
    return images.to_model(images.resize(image, size))[None]


def _mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    return (images.resize(mask, size) >= 0.5).astype(np.float32)[None]


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """One ``generate`` call after validation: the prompts as sampled and what each stage is conditioned on
    (images given once, repeated per batch)."""

    prompts: List[str]
    negatives: List[str]  # the unconditional caption of each prompt ("" = GLIDE's empty caption)
    batch_size: Optional[int]  # None: every sample in one batch
    base: BaseConditioning
    upsample: Optional[UpsampleConditioning]


class Pipeline:
    """GLIDE's sampling pipeline over loaded models; see ``generate``.

    ``prompt_rewriter`` (any ``Callable[[str], str]``) replaces the base model's own
    ``prompt_rewrites`` as the way ``generate`` rewrites prompts before sampling them.
    """

    def __init__(self, base: LoadedModel, upsampler: Optional[LoadedModel] = None, clip: Optional[LoadedModel] = None,
                 prompt_rewriter: Optional[PromptRewriter] = None):
        _check_family(base, "base model", "unet")
        _check_family(upsampler, "upsampler", "unet")
        _check_family(clip, "CLIP model", "clip")
        if base.config.unet.super_res:
            raise ValueError("the base model must not be a super-resolution model")
        if upsampler is not None and not upsampler.config.unet.super_res:
            raise ValueError("the upsampler must be a super-resolution model")
        if prompt_rewriter is not None and not callable(prompt_rewriter):
            raise ValueError(f"prompt_rewriter must be a callable str -> str, got {type(prompt_rewriter).__name__}")
        self.base, self.upsampler, self.clip = base, upsampler, clip
        self.prompt_rewriter: Optional[PromptRewriter] = (
            prompt_rewriter if prompt_rewriter is not None else (base.prompt_rewrites or None))

    def rewrite(self, prompts: Union[str, Sequence[str]]) -> List[str]:
        """``prompts`` as ``generate`` samples them (with ``rewrite_prompts=True``)."""
        return rewrite_all(self.prompt_rewriter, _check_prompts(prompts))

    # ------------------------------------------------------------------ preparation
    def _plan(self, prompts, *, guidance_scale, base, upsample, batch_size, init_image, strength, inpaint_image,
              inpaint_mask, clip_guidance_scale, rewrite_prompts, negative_prompt=None, guidance_interval=None,
              dynamic_threshold=None) -> SamplingPlan:
        """Validate every argument of ``generate`` and prepare what the stages need, before any sampling."""
        prompts = self.rewrite(prompts) if rewrite_prompts else _check_prompts(prompts)
        negatives = _check_negatives(negative_prompt, len(prompts))
        guidance_scale, base, upsample = self._settings(guidance_scale, base, upsample, clip_guidance_scale)
        if any(negatives) and (clip_guidance_scale is not None or guidance_scale == 1.0):
            raise ValueError("a negative prompt replaces the empty caption of classifier-free guidance: it needs "
                             "a guidance_scale other than 1 and no CLIP guidance")
        guidance_interval = guided_part(guidance_interval, base)
        if dynamic_threshold is not None and not 0.0 < dynamic_threshold <= 1.0:
            raise ValueError(f"dynamic_threshold is a quantile in (0, 1] (e.g. 0.995), got {dynamic_threshold}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if (inpaint_image is None) != (inpaint_mask is None):
            raise ValueError("inpainting needs both inpaint_image and inpaint_mask")
        if init_image is not None and inpaint_image is not None:
            raise ValueError("give either init_image (editing) or inpaint_image (inpainting), not both")
        warn_about_prompts(prompts, self.base)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        size = self.base.config.unet.image_size
        init = None
        if init_image is not None:
            init = _image_at(images.read_image(init_image, "init_image"), size)
        elif inpaint_image is None and base.start < 1.0:  # a truncated start is an edit of the plain canvas
            init = images.to_model(np.full((size, size, 3), base.canvas, np.uint8))[None]
            strength = base.start
        inpaint_low, inpaint_high = self._inpaint_images(inpaint_image, inpaint_mask, upsample is not None)
        if clip_guidance_scale is not None and self.clip is None:
            raise ValueError("CLIP guidance needs a CLIP model: load the pipeline with clip=...")
        return SamplingPlan(
            prompts, negatives, batch_size,
            BaseConditioning(base, guidance_scale, clip_guidance_scale, init, strength, inpaint_low,
                             guidance_interval, dynamic_threshold),
            None if upsample is None else UpsampleConditioning(upsample, inpaint_high),
        )

    def _settings(self, guidance_scale, base, upsample, clip_guidance_scale):
        """The guidance scale and both stages' options, the models' recommendations filled in, checked."""
        if guidance_scale is None:
            guidance_scale = self.base.guidance_scale if self.base.guidance_scale is not None else GUIDANCE_DEFAULT
        if not 0.0 <= guidance_scale <= 100.0:
            raise ValueError(f"guidance_scale must be in [0, 100], got {guidance_scale}")
        if clip_guidance_scale is not None and not 0.0 < clip_guidance_scale <= 1000.0:
            raise ValueError(f"clip_guidance_scale must be in (0, 1000], got {clip_guidance_scale}")
        base = resolve_stage(base, self.base, BASE_DEFAULT)
        base.validate("base")
        if upsample is not None:
            if self.upsampler is None and isinstance(upsample, str) and upsample == DEFAULT:
                upsample = None  # no upsampler loaded: base-size samples
            else:
                upsample = resolve_stage(upsample, self.upsampler, UPSAMPLE_DEFAULT)
                upsample.validate("upsample")
                if self.upsampler is None:
                    raise ValueError("no upsampler is loaded: pass upsample=None for base-size samples")
        return guidance_scale, base, upsample

    def _inpaint_images(self, inpaint_image, inpaint_mask, upsampling: bool):
        """The known image and mask at the base size and, when upsampling, at the upsampler's size."""
        if inpaint_image is None:
            if self.base.config.unet.inpaint:
                raise ValueError("this is an inpainting model: give inpaint_image and inpaint_mask")
            if upsampling and self.upsampler.config.unet.inpaint:
                raise ValueError("the upsampler is an inpainting model: give inpaint_image and inpaint_mask")
            return None, None
        image = images.read_image(inpaint_image, "inpaint_image")
        mask = images.read_mask(inpaint_mask, image.shape[:2])
        if not self.base.config.unet.inpaint:
            raise ValueError("the base model is not an inpainting model; load base-inpaint for inpainting")
        if mask.min() > 0:
            raise ValueError("the inpainting mask keeps every pixel (all white): there is nothing to fill in; "
                             "paint the region to replace black")
        size = self.base.config.unet.image_size
        low = (_image_at(image, size), _mask_at(mask, size))
        if not upsampling:
            return low, None
        high = self.upsampler.config.unet.image_size
        return low, (_image_at(image, high), _mask_at(mask, high))

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        seed: Union[int, jax.Array] = 0,
        guidance_scale: Optional[float] = None,
        base: Union[StageOptions, str] = DEFAULT,
        upsample: Union[StageOptions, str, None] = DEFAULT,
        batch_size: Optional[int] = None,
        init_image: Optional[images.ImageLike] = None,
        strength: float = 0.7,
        inpaint_image: Optional[images.ImageLike] = None,
        inpaint_mask: Optional[images.ImageLike] = None,
        clip_guidance_scale: Optional[float] = None,
        negative_prompt: Union[str, Sequence[str], None] = None,
        guidance_interval: Optional[Tuple[float, float]] = None,
        dynamic_threshold: Optional[float] = None,
        candidates: int = 1,
        keep: int = 1,
        first_index: int = 0,
        progress: bool = False,
        rewrite_prompts: bool = True,
    ) -> np.ndarray:
        """Sample images of the prompts; returns uint8 ``[N * keep, S, S, 3]`` (S = upsampler size, or base size).

        ``guidance_scale`` is the classifier-free guidance scale (1 = plain conditional);
        None takes the base model's recommendation, else 3. ``negative_prompt`` (one
        string, or one per prompt) replaces the empty caption of its unconditional half.
        ``guidance_interval=(low, high)`` applies it only on that part of the chain
        (fractions, 1 = pure noise), running the conditional half alone elsewhere;
        None takes the base stage's ``guidance_interval``, ``(0, 1)`` guides every step.
        ``dynamic_threshold`` (a quantile such as 0.995) rescales each x_0 estimate
        by its own high quantile instead of clamping it, for high guidance scales.
        ``base`` / ``upsample`` default to each model's recommended ``StageOptions``
        (else ``BASE_DEFAULT`` / ``UPSAMPLE_DEFAULT``).
        ``init_image`` + ``strength`` edit a sketch or photo (SDEdit): the image is
        noised to ``strength`` of the chain and denoised with the prompt.
        ``inpaint_image`` + ``inpaint_mask`` (1 = keep) need inpainting models.
        ``clip_guidance_scale`` replaces classifier-free guidance by CLIP guidance.
        ``candidates`` > 1 draws that many base samples per prompt, scores them with
        the pipeline's noise-aware CLIP at t = 0 and keeps the ``keep`` best (best
        first; only those are upsampled).
        ``upsample=None`` returns the base samples. Batches of ``batch_size``
        (default: all) are padded to one shape, so they share one compilation.
        ``rewrite_prompts`` samples the prompts as ``rewrite`` says them; False
        samples them as given.

        Sample ``r`` (prompt ``r // candidates``) is drawn from the key
        ``fold_in(key(seed), first_index * candidates + r)`` alone: it does not depend
        on the batch size, on how many images are asked for or on the other prompts,
        so one image of a grid is re-made by asking for its prompt with its index as
        ``first_index``.
        """
        plan = self._plan(prompts, guidance_scale=guidance_scale, base=base, upsample=upsample,
                          batch_size=batch_size, init_image=init_image, strength=strength,
                          inpaint_image=inpaint_image, inpaint_mask=inpaint_mask,
                          clip_guidance_scale=clip_guidance_scale, rewrite_prompts=rewrite_prompts,
                          negative_prompt=negative_prompt, guidance_interval=guidance_interval,
                          dynamic_threshold=dynamic_threshold)
        candidates, keep = self._check_ranking(candidates, keep)
        if isinstance(first_index, bool) or not isinstance(first_index, (int, np.integer)) or first_index < 0:
            raise ValueError(f"first_index must be an integer >= 0, got {first_index!r}")
        rows = [p for p in plan.prompts for _ in range(candidates)]
        negatives = [p for p in plan.negatives for _ in range(candidates)]
        keys = image_keys(seed, range(first_index * candidates, (first_index + len(plan.prompts)) * candidates))
        batch = plan.batch_size or len(rows)
        bar = ProgressBar.get() if progress else None
        base_conditioning = plan.base.repeated(batch)

        def run_base(chunk, chunk_keys, negatives_chunk):
            return sample_base(self.base, chunk, stage_keys(chunk_keys, 0), base_conditioning,
                               negatives=negatives_chunk, clip=self.clip, progress=bar)

        samples = self._in_batches("base", run_base, rows, keys, batch, bar, negatives)
        if candidates > 1:
            order = rank_candidates(self.clip, samples, rows, candidates, keep)
            samples, rows, keys = samples[order], [rows[i] for i in order], keys[jnp.asarray(order)]
        if plan.upsample is not None:
            upsample_conditioning = plan.upsample.repeated(batch)
            low_res = samples

            def run_upsample(chunk, chunk_keys, low):
                return sample_upsample(self.upsampler, chunk, np.stack(low), stage_keys(chunk_keys, 1),
                                       upsample_conditioning, progress=bar)

            samples = self._in_batches("upsample", run_upsample, rows, keys, batch, bar, list(low_res))
        if bar:
            bar.close()
        return images.to_uint8(samples)

    def _check_ranking(self, candidates, keep) -> Tuple[int, int]:
        for name, value in (("candidates", candidates), ("keep", keep)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if keep > candidates:
            raise ValueError(f"keep ({keep}) cannot exceed candidates ({candidates})")
        if candidates > 1 and self.clip is None:
            raise ValueError("re-ranking candidates needs a CLIP model: load the pipeline with clip=...")
        return int(candidates), int(keep)

    @staticmethod
    def _in_batches(label: str, run, rows: List[str], keys: jax.Array, batch_size: int, bar, extra: list):
        """``run(prompts, keys, extra)`` over batches of ``batch_size`` rows, each padded to that size
        with copies of its last row (one compilation for all); float32 ``[len(rows), S, S, 3]`` on the host."""
        outputs = []
        for first in range(0, len(rows), batch_size):
            end = min(first + batch_size, len(rows))
            pad = batch_size - (end - first)
            take = list(range(first, end)) + [end - 1] * pad
            if bar:
                bar.start(f"{label} {first + 1}-{end}/{len(rows)}")
            out = run([rows[i] for i in take], keys[jnp.asarray(take)], [extra[i] for i in take])
            outputs.append(np.asarray(jax.device_get(out), np.float32)[: end - first])
        return np.concatenate(outputs)

    def upsample_images(self, prompts, image: images.ImageLike, *, seed: Union[int, jax.Array] = 0,
                        options: Union[StageOptions, str] = DEFAULT, progress: bool = False) -> np.ndarray:
        """Super-resolve one given image once per prompt; returns uint8 ``[N, S, S, 3]``."""
        prompts = _check_prompts(prompts)
        key = make_key(seed)
        if self.upsampler is None:
            raise ValueError("no upsampler is loaded")
        if self.upsampler.config.unet.inpaint:
            raise ValueError("the upsampler is an inpainting model: it needs an image and mask to inpaint; "
                             "use generate(inpaint_image=..., inpaint_mask=...)")
        options = resolve_stage(options, self.upsampler, UPSAMPLE_DEFAULT)
        options.validate("upsample")
        warn_about_prompts(prompts, self.upsampler)
        low = self.upsampler.config.low_res_size or self.base.config.unet.image_size
        x = _image_at(images.read_image(image, "image"), low)
        bar = ProgressBar.get() if progress else None
        keys = stage_keys(image_keys(key, range(len(prompts))), 1)
        out = sample_upsample(self.upsampler, prompts, np.repeat(x, len(prompts), 0), keys,
                              UpsampleConditioning(options), progress=bar)
        if bar:
            bar.close()
        return images.to_uint8(jax.device_get(out))
