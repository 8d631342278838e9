"""One generation request: everything ``Pipeline.generate`` is asked to do, validated once.

The CLI, the web demo, the shapes evaluation and notebooks all describe a
generation as a :class:`GenerateRequest`; ``Pipeline.generate(request)`` runs
it (``generate("a prompt", seed=1, ...)`` builds one from the same field names).
Everything that can be checked without the models is checked when the request
is made, so a bad value fails before any model is read; what depends on the
models (is the base an inpainting model, is a CLIP loaded) is checked by the
pipeline before anything is sampled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple, Union

import jax
import numpy as np

from glide_jax.errors import InputError
from glide_jax.sampling.options import DEFAULT, StageOptions, check_interval

SEED_RANGE = 2 ** 32  # a JAX key holds 32 bits of an integer seed; larger ones would alias smaller ones

Stage = Union[StageOptions, str]


def _is_whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    """What to sample. Only ``prompts`` is required; every other field has the default the pipeline documents."""

    prompts: Tuple[str, ...]  # one caption per image (a string is one prompt)
    negative_prompt: Union[None, str, Tuple[str, ...]] = None  # replaces guidance's empty caption: one, or one per prompt
    seed: Union[int, jax.Array] = 0  # image i is drawn from fold_in(key(seed), first_index + i)
    first_index: int = 0  # index of the first image: re-makes image I of an earlier request
    guidance_scale: Optional[float] = None  # classifier-free guidance (1 = none); None: the model's, else 3
    clip_guidance_scale: Optional[float] = None  # CLIP guidance instead of classifier-free guidance
    guidance_interval: Optional[Tuple[float, float]] = None  # guide only there (fractions, 1 = noise); None: the stage's
    dynamic_threshold: Optional[float] = None  # quantile rescaling of each x0 estimate instead of clamping
    base: Stage = DEFAULT  # the base stage's StageOptions, or DEFAULT: the model's recommendation
    upsample: Optional[Stage] = DEFAULT  # the upsampler's, DEFAULT, or None for base-size samples
    batch_size: Optional[int] = None  # images sampled at once (None: all)
    init_image: Any = None  # an image to edit (SDEdit), with strength
    strength: float = 0.7  # fraction of the chain an edit re-runs, in (0, 1]
    inpaint_image: Any = None  # the image to inpaint (needs inpainting models), with inpaint_mask
    inpaint_mask: Any = None  # 1 / white = keep, 0 / black = fill in
    candidates: int = 1  # samples drawn per prompt, ranked by the noise-aware CLIP ...
    keep: int = 1  # ... of which the best this many are kept (best first)
    rewrite_prompts: bool = True  # sample the prompts as the base model's rewrite rules say them

    def __post_init__(self):
        prompts = (self.prompts,) if isinstance(self.prompts, str) else tuple(self.prompts)
        if not prompts:
            raise InputError("prompts is empty: give at least one caption")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise InputError(f"prompts must be strings, got {type(bad[0]).__name__}")
        object.__setattr__(self, "prompts", prompts)
        negative = self.negative_prompt
        if negative is not None and not isinstance(negative, str):
            negative = tuple(negative)
            if len(negative) != len(prompts) or not all(isinstance(p, str) for p in negative):
                raise InputError(f"negative_prompt must be a string or {len(prompts)} strings (one per prompt), "
                                 f"got {len(negative)} values")
            object.__setattr__(self, "negative_prompt", negative)
        self._check_seed()
        self._check_counts()
        self._check_guidance()
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {self.strength}")
        if (self.inpaint_image is None) != (self.inpaint_mask is None):
            raise InputError("inpainting needs both inpaint_image and inpaint_mask")
        if self.init_image is not None and self.inpaint_image is not None:
            raise InputError("give either init_image (editing) or inpaint_image (inpainting), not both")

    def _check_seed(self) -> None:
        if isinstance(self.seed, (bool, np.bool_)) or not (_is_whole(self.seed) or isinstance(self.seed, jax.Array)):
            raise InputError(f"seed must be an integer or a JAX key, got {self.seed!r}")
        if _is_whole(self.seed) and not 0 <= int(self.seed) < SEED_RANGE:
            raise InputError(f"seed must be an integer in [0, {SEED_RANGE - 1}], got {int(self.seed)} "
                             "(a JAX key keeps 32 bits, so a larger seed would repeat a smaller one)")

    def _check_counts(self) -> None:
        if not _is_whole(self.first_index) or self.first_index < 0:
            raise InputError(f"first_index must be an integer >= 0, got {self.first_index!r}")
        if self.batch_size is not None and (not _is_whole(self.batch_size) or self.batch_size < 1):
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("candidates", "keep"):
            value = getattr(self, name)
            if not _is_whole(value) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.keep > self.candidates:
            raise InputError(f"keep ({self.keep}) cannot exceed candidates ({self.candidates})")

    def _check_guidance(self) -> None:
        if self.guidance_scale is not None and not 0.0 <= self.guidance_scale <= 100.0:
            raise InputError(f"guidance_scale must be in [0, 100], got {self.guidance_scale}")
        if self.clip_guidance_scale is not None and not 0.0 < self.clip_guidance_scale <= 1000.0:
            raise InputError(f"clip_guidance_scale must be in (0, 1000], got {self.clip_guidance_scale}")
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))
        if self.dynamic_threshold is not None and not 0.0 < self.dynamic_threshold <= 1.0:
            raise InputError(f"dynamic_threshold is a quantile in (0, 1] (e.g. 0.995), got {self.dynamic_threshold}")
        if self.negatives_given() and (self.clip_guidance_scale is not None or self.guidance_scale == 1.0):
            raise InputError("a negative prompt replaces the empty caption of classifier-free guidance: it needs "
                             "a guidance_scale other than 1 and no CLIP guidance")

    def negatives_given(self) -> bool:
        negative = self.negative_prompt
        return bool(negative) if isinstance(negative, str) else bool(negative and any(negative))

    def negatives(self, prompts) -> Tuple[str, ...]:
        """The unconditional caption of each of ``prompts`` ("" = GLIDE's empty caption)."""
        if self.negative_prompt is None:
            return ("",) * len(prompts)
        if isinstance(self.negative_prompt, str):
            return (self.negative_prompt,) * len(prompts)
        return self.negative_prompt

    def key(self) -> jax.Array:
        """The request's PRNG key: ``key(seed)``, or the seed itself when it is a JAX key."""
        return jax.random.key(int(self.seed)) if _is_whole(self.seed) else self.seed
