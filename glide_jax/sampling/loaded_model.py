"""A model ready to sample: config, float32 parameters, its tokenizer and what it recommends."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.models.families import family_of
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.rewrites import PromptRewrites


@dataclasses.dataclass
class LoadedModel:
    """A diffusion model (or CLIP) ready to sample: config, parameters and its tokenizer.

    ``sampling`` and ``guidance_scale`` are the settings recommended for this model
    (a model directory's ``sampling.json``), used wherever a caller asks for the
    defaults; None falls back to the package's defaults. ``prompt_rewrites`` are
    the rules that say a prompt in words the model was trained on
    (:mod:`glide_jax.sampling.rewrites`); the pipeline applies its base model's.
    ``source`` says where the model came from, for messages.
    """

    config: Union[ModelConfig, ClipConfig]
    params: Any  # Flax variables {"params": ...}
    tokenizer: Any
    sampling: Optional[StageOptions] = None
    guidance_scale: Optional[float] = None
    prompt_rewrites: PromptRewrites = PromptRewrites()
    source: str = ""

    @property
    def family(self):
        return family_of(self.config)

    def tokens(self, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """The model's text inputs for ``prompts`` (U-Net: tokens and mask; CLIP: tokens and lengths)."""
        return self.family.encode_prompts(self.tokenizer, self.config, prompts)
