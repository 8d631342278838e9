"""What a model recommends for its own sampling: the contents of a model directory's ``sampling.json``.

    {"sampler": "ddpm", "steps": 50, "temperature": 1.0, "start": 0.85, "canvas": [200, 200, 200],
     "guidance_scale": 3.0, "guidance_weight": 3.0,
     "prompt_rewrites": [{"pattern": "...", "replacement": "...", "note": "..."}]}

Every key is optional. The sampler keys are ``StageOptions`` fields (the
settings the model was evaluated with); ``guidance_scale`` is its classifier-free
guidance scale. ``guidance_weight`` is the same number for a guidance-distilled
student (``unet.guidance_embed``), which takes it as its input ``w`` and so
guides itself in one evaluation per step; a model directory gives one of the
two keys. ``prompt_rewrites`` are the rules of
:mod:`glide_jax.sampling.rewrites`. They apply wherever a caller asks for the
defaults (``DEFAULT`` stage options, ``guidance_scale=None``, ``rewrite_prompts=True``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from glide_jax.errors import InputError
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.rewrites import PromptRewrites

GUIDANCE_KEY = "guidance_scale"
WEIGHT_KEY = "guidance_weight"  # a guidance-distilled student's w (glide_jax.train.distill)
REWRITES_KEY = "prompt_rewrites"


@dataclasses.dataclass(frozen=True)
class SamplingAdvice:
    """A model's recommended stage options, guidance scale and prompt rewrites (each may be absent)."""

    stage: Optional[StageOptions] = None
    guidance_scale: Optional[float] = None
    prompt_rewrites: PromptRewrites = PromptRewrites()

    @classmethod
    def from_json(cls, value: Optional[Mapping[str, Any]], where: str = "sampling.json") -> "SamplingAdvice":
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InputError(f"{where} must hold a JSON object, got {type(value).__name__}")
        settings = dict(value)
        guidance, weight = settings.pop(GUIDANCE_KEY, None), settings.pop(WEIGHT_KEY, None)
        if guidance is not None and weight is not None:
            raise InputError(f"{where}: give {GUIDANCE_KEY} or {WEIGHT_KEY} (a guidance-distilled model's w), "
                             "not both")
        key, guidance = (GUIDANCE_KEY, guidance) if weight is None else (WEIGHT_KEY, weight)
        if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))):
            raise InputError(f"{where}: {key} must be a number, got {guidance!r}")
        rewrites = PromptRewrites.from_json(settings.pop(REWRITES_KEY, []), f"{where}: {REWRITES_KEY}")
        try:
            stage = StageOptions.from_dict(settings) if settings else None
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}: {e}") from None
        return cls(stage, None if guidance is None else float(guidance), rewrites)
