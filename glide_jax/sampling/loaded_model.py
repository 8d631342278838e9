"""A model ready to sample: config, float32 parameters, its tokenizer and what it recommends.

``with_dtype("bfloat16")`` gives the same model computing in bfloat16: its
parameters stay float32 (each layer casts them as it runs) and it still
returns float32, so the diffusion maths around it is unchanged. On CPU this
is slower and less accurate than float32 (docs/benchmarks.md); it is for
accelerators with bfloat16 units.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.errors import InputError
from glide_jax.family import family_of
from glide_jax.models.layers import COMPUTE_DTYPES
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.prompt_check import encoding_quietly, text_context
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

    @property
    def image_size(self) -> int:
        return self.family.image_size(self.config)

    @property
    def is_super_res(self) -> bool:
        return self.family.is_super_res(self.config)

    @property
    def is_inpaint(self) -> bool:
        return self.family.is_inpaint(self.config)

    @property
    def dtype(self) -> str:
        """The compute dtype of the network (its parameters are float32 whatever it is)."""
        return self.family.compute_dtype(self.config)

    def with_dtype(self, dtype: str) -> "LoadedModel":
        """This model computing in ``dtype`` (one of ``COMPUTE_DTYPES``); parameters are shared, not copied."""
        if dtype not in COMPUTE_DTYPES:
            raise InputError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
        return dataclasses.replace(self, config=self.family.with_compute_dtype(self.config, dtype))

    def tokens(self, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """The model's text inputs for ``prompts`` (U-Net: tokens and mask; CLIP: tokens and lengths).

        A U-Net's over-long prompts are cut without a warning here: ``Pipeline.generate`` says so once per
        request (:mod:`glide_jax.sampling.prompt_check`), not once per batch and stage."""
        if text_context(self.config) is None:
            return self.family.encode_prompts(self.tokenizer, self.config, prompts)
        with encoding_quietly():
            return self.family.encode_prompts(self.tokenizer, self.config, prompts)
