"""The models a demo server holds, loaded and compiled once at start-up rather than per request.

``--model embedded``, ``embedded-fast`` and ``openai`` name a set (``MODEL_SETS``): the
generation base, its upsampler, the inpainting base and its upsampler. Any
other ``--model`` is one base model for generating and editing; inpainting then
needs it to be an inpainting model. Warm-up runs each tab's default request
once, so the first visitor does not wait for XLA; other samplers and step
counts compile on their first use.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional

from glide_jax.data.shapes import COLORS, RELATIONS, SHAPES
from glide_jax.errors import InputError
from glide_jax.sampling.loading import EMBEDDED_SETS, MODEL_SETS, pipeline_for
from glide_jax.sampling.pipeline import Pipeline

# The one line the page says about the embedded models: they know the captioned-shapes grammar only.
EMBEDDED_NOTE = (f"The embedded models are tiny and know one grammar only: '[small|large] COLOUR SHAPE' or two of "
                 f"them joined by a relation (colours {', '.join(COLORS)}; shapes {', '.join(SHAPES)}; relations "
                 f"{', '.join(RELATIONS)}). For GLIDE's released weights run `glide-jax download all`, then "
                 "`glide-jax serve --model openai`.")


@dataclasses.dataclass
class DemoModels:
    """Pipelines of one server: ``generate`` (text-to-image and editing) and ``inpaint`` (None if not loaded)."""

    generate: Pipeline
    inpaint: Optional[Pipeline]
    name: str  # what --model said, shown on the page
    load_seconds: float = 0.0  # reading parameters
    warmup_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)  # first request per tab (compiling)

    @property
    def note(self) -> str:
        return EMBEDDED_NOTE if self.name in EMBEDDED_SETS else f"Models: {self.name}."


def load_models(model: str = "embedded", upsampler: Optional[str] = None, clip: Optional[str] = None,
                dtype: Optional[str] = None) -> DemoModels:
    """Read the models named like the CLI's ``--model`` / ``--upsampler`` / ``--clip-model``."""
    started = time.perf_counter()
    loaded = {}  # the embedded set's two roles share one upsampler: it is read once
    options = dict(upsampler=upsampler, clip=clip, dtype=dtype, loaded=loaded)
    generate = pipeline_for(model, **options)
    if model not in MODEL_SETS and generate.base.is_inpaint:
        raise InputError(f"--model {model} is an inpainting model; serve it with a model set "
                         "(--model embedded or openai) so Generate and Edit have a text-to-image model")
    inpaint = pipeline_for(model, inpaint=True, **options) if model in MODEL_SETS else None
    return DemoModels(generate, inpaint, model, load_seconds=time.perf_counter() - started)
