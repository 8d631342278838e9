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

from glide_jax.errors import InputError
from glide_jax.errors import InputWarning
from glide_jax.sampling import images
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import (BASE_DEFAULT, DEFAULT, GUIDANCE_DEFAULT, UPSAMPLE_DEFAULT, StageOptions,
                                        guided_part, resolve_stage)
from glide_jax.sampling.progress import ProgressBar
from glide_jax.sampling.prompt_check import prompt_messages, text_context
from glide_jax.sampling.ranking import rank_candidates
from glide_jax.sampling.request import GenerateRequest
from glide_jax.sampling.rewrites import PromptRewriter, rewrite_all
from glide_jax.sampling.stages import (BaseConditioning, UpsampleConditioning, image_keys, sample_base,
                                      sample_upsample, stage_keys)

__all__ = ["BASE_DEFAULT", "DEFAULT", "GUIDANCE_DEFAULT", "UPSAMPLE_DEFAULT", "GenerateRequest", "LoadedModel",
           "Pipeline", "StageOptions", "resolve_stage"]


def make_key(seed: Union[int, jax.Array]) -> jax.Array:
    """The PRNG key of ``seed``: an integer in [0, 2**32) or a JAX key, which is used as given."""
    return GenerateRequest(("",), seed=seed).key()


def warn_about_prompts(prompts: Sequence[str], model: LoadedModel) -> None:
    """Say, in one line per prompt, when a prompt is probably not read as meant (see ``prompt_check``)."""
    for message in prompt_messages(prompts, model.tokenizer, text_context(model.config)):
        warnings.warn(message, InputWarning, stacklevel=3)


def _check_family(model: Optional[LoadedModel], role: str, draws: bool) -> None:
    """A base or upsampler must be of a family that draws images; a CLIP one that does not."""
    if model is not None and model.family.samples_images != draws:
        what = "a model that draws images (a diffusion model)" if draws else "a CLIP model"
        raise InputError(f"the {role} must be {what}, got a {model.family.name} model"
                         + (f" ({model.source})" if model.source else ""))


def _image_at(image: np.ndarray, size: int) -> np.ndarray:
    """``[1, size, size, 3]`` in [-1, 1] of a uint8 image."""
    return images.to_model(images.resize(image, size))[None]


def _mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    return (images.resize(mask, size) >= 0.5).astype(np.float32)[None]


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """One request after the models have been consulted: the prompts as sampled and what each stage is
    conditioned on (images given once, repeated per batch)."""

    prompts: List[str]
    negatives: List[str]  # the unconditional caption of each prompt ("" = GLIDE's empty caption)
    base: BaseConditioning
    upsample: Optional[UpsampleConditioning]


class Pipeline:
    """GLIDE's sampling pipeline over loaded models; see ``generate``.

    ``prompt_rewriter`` (any ``Callable[[str], str]``) replaces the base model's own
    ``prompt_rewrites`` as the way ``generate`` rewrites prompts before sampling them.
    """

    def __init__(self, base: LoadedModel, upsampler: Optional[LoadedModel] = None, clip: Optional[LoadedModel] = None,
                 prompt_rewriter: Optional[PromptRewriter] = None):
        _check_family(base, "base model", True)
        _check_family(upsampler, "upsampler", True)
        _check_family(clip, "CLIP model", False)
        if base.is_super_res:
            raise InputError("the base model must not be a super-resolution model")
        if upsampler is not None and not upsampler.is_super_res:
            raise InputError("the upsampler must be a super-resolution model")
        if prompt_rewriter is not None and not callable(prompt_rewriter):
            raise InputError(f"prompt_rewriter must be a callable str -> str, got {type(prompt_rewriter).__name__}")
        self.base, self.upsampler, self.clip = base, upsampler, clip
        self.prompt_rewriter: Optional[PromptRewriter] = (
            prompt_rewriter if prompt_rewriter is not None else (base.prompt_rewrites or None))

    def rewrite(self, prompts: Union[str, Sequence[str]]) -> List[str]:
        """``prompts`` as ``generate`` samples them (with ``rewrite_prompts=True``)."""
        return rewrite_all(self.prompt_rewriter, list(GenerateRequest(prompts).prompts))

    # ------------------------------------------------------------------ preparation
    def _plan(self, request: GenerateRequest) -> SamplingPlan:
        """Check ``request`` against the loaded models and prepare what the stages need, before any sampling."""
        prompts = self.rewrite(request.prompts) if request.rewrite_prompts else list(request.prompts)
        negatives = list(request.negatives(prompts))
        guidance_scale, base, upsample = self._settings(request.guidance_scale, request.base, request.upsample)
        if any(negatives) and guidance_scale == 1.0:
            raise InputError("a negative prompt replaces the empty caption of classifier-free guidance: it needs "
                             "a guidance_scale other than 1")
        guidance_interval = guided_part(request.guidance_interval, base)
        warn_about_prompts(prompts, self.base)
        size = self.base.image_size
        init, strength = None, request.strength
        if request.init_image is not None:
            init = _image_at(images.read_image(request.init_image, "init_image"), size)
        elif request.inpaint_image is None and base.start < 1.0:  # a truncated start is an edit of the plain canvas
            init = images.to_model(np.full((size, size, 3), base.canvas, np.uint8))[None]
            strength = base.start
        inpaint_low, inpaint_high = self._inpaint_images(request.inpaint_image, request.inpaint_mask,
                                                         upsample is not None)
        if request.clip_guidance_scale is not None and self.clip is None:
            raise InputError("CLIP guidance needs a CLIP model: load the pipeline with clip=...")
        if request.candidates > 1 and self.clip is None:
            raise InputError("re-ranking candidates needs a CLIP model: load the pipeline with clip=...")
        return SamplingPlan(
            prompts, negatives,
            BaseConditioning(base, guidance_scale, request.clip_guidance_scale, init, strength, inpaint_low,
                             guidance_interval, request.dynamic_threshold),
            None if upsample is None else UpsampleConditioning(upsample, inpaint_high),
        )

    def _settings(self, guidance_scale, base, upsample):
        """The guidance scale and both stages' options, the models' recommendations filled in, checked."""
        if guidance_scale is None:
            guidance_scale = self.base.guidance_scale if self.base.guidance_scale is not None else GUIDANCE_DEFAULT
        base = resolve_stage(base, self.base, BASE_DEFAULT)
        base.validate("base")
        if upsample is not None:
            if self.upsampler is None and isinstance(upsample, str) and upsample == DEFAULT:
                upsample = None  # no upsampler loaded: base-size samples
            else:
                upsample = resolve_stage(upsample, self.upsampler, UPSAMPLE_DEFAULT)
                upsample.validate("upsample")
                if self.upsampler is None:
                    raise InputError("no upsampler is loaded: pass upsample=None for base-size samples")
        return guidance_scale, base, upsample

    def _inpaint_images(self, inpaint_image, inpaint_mask, upsampling: bool):
        """The known image and mask at the base size and, when upsampling, at the upsampler's size."""
        if inpaint_image is None:
            if self.base.is_inpaint:
                raise InputError("this is an inpainting model: give inpaint_image and inpaint_mask")
            if upsampling and self.upsampler.is_inpaint:
                raise InputError("the upsampler is an inpainting model: give inpaint_image and inpaint_mask")
            return None, None
        image = images.read_image(inpaint_image, "inpaint_image")
        mask = images.read_mask(inpaint_mask, image.shape[:2])
        if not self.base.is_inpaint:
            raise InputError("the base model is not an inpainting model; load base-inpaint for inpainting")
        if mask.min() > 0:
            raise InputError("the inpainting mask keeps every pixel (all white): there is nothing to fill in; "
                             "paint the region to replace black")
        size = self.base.image_size
        low = (_image_at(image, size), _mask_at(mask, size))
        if not upsampling:
            return low, None
        high = self.upsampler.image_size
        return low, (_image_at(image, high), _mask_at(mask, high))

    # ------------------------------------------------------------------ public
    def generate(self, request: Union[GenerateRequest, str, Sequence[str]], *, progress: bool = False,
                 **fields) -> np.ndarray:
        """Sample a :class:`GenerateRequest`; returns uint8 ``[N * keep, S, S, 3]`` (S = upsampler size, or
        base size).

        ``generate("a red circle", seed=1, guidance_scale=2)`` is the keyword form: the prompts and any
        request fields (with a request, the fields replace its own). ``progress`` shows a progress bar.

        What the fields mean is documented on ``GenerateRequest``. The stages default to each model's
        recommended ``StageOptions`` (else ``BASE_DEFAULT`` / ``UPSAMPLE_DEFAULT``) and the guidance
        scale to the base model's (else 3). Batches of ``batch_size`` rows are padded to one shape, so
        they share one compilation. With ``candidates`` > 1 each prompt gets that many base samples,
        scored by the pipeline's noise-aware CLIP at t = 0; the ``keep`` best (best first) are upsampled.

        Sample ``r`` (prompt ``r // candidates``) is drawn from the key
        ``fold_in(key(seed), first_index * candidates + r)`` alone: it does not depend
        on the batch size, on how many images are asked for or on the other prompts,
        so one image of a grid is re-made by asking for its prompt with its index as
        ``first_index``.
        """
        if isinstance(request, GenerateRequest):
            request = dataclasses.replace(request, **fields) if fields else request
        else:
            request = GenerateRequest(request, **fields)
        plan = self._plan(request)
        candidates, keep = request.candidates, request.keep
        rows = [p for p in plan.prompts for _ in range(candidates)]
        negatives = [p for p in plan.negatives for _ in range(candidates)]
        first = request.first_index
        keys = image_keys(request.key(), range(first * candidates, (first + len(plan.prompts)) * candidates))
        batch = request.batch_size or len(rows)
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
        request = GenerateRequest(prompts, seed=seed, upsample=options)
        prompts, key = list(request.prompts), request.key()
        if self.upsampler is None:
            raise InputError("no upsampler is loaded")
        if self.upsampler.is_inpaint:
            raise InputError("the upsampler is an inpainting model: it needs an image and mask to inpaint; "
                             "use generate(inpaint_image=..., inpaint_mask=...)")
        options = resolve_stage(options, self.upsampler, UPSAMPLE_DEFAULT)
        options.validate("upsample")
        warn_about_prompts(prompts, self.upsampler)
        low = self.upsampler.family.low_res_size(self.upsampler.config) or self.base.image_size
        x = _image_at(images.read_image(image, "image"), low)
        bar = ProgressBar.get() if progress else None
        keys = stage_keys(image_keys(key, range(len(prompts))), 1)
        out = sample_upsample(self.upsampler, prompts, np.repeat(x, len(prompts), 0), keys,
                              UpsampleConditioning(options), progress=bar)
        if bar:
            bar.close()
        return images.to_uint8(jax.device_get(out))
