"""The models a demo server holds, loaded and compiled once at start-up rather than per request.

``--model embedded`` and ``--model openai`` name a set (``MODEL_SETS``): the
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
        return EMBEDDED_NOTE if self.name == "embedded" else f"Models: {self.name}."


def load_models(model: str = "embedded", upsampler: Optional[str] = None, clip: Optional[str] = None,
                dtype: Optional[str] = None) -> DemoModels:
    """Read the models named like the CLI's ``--model`` / ``--upsampler`` / ``--clip-model``."""
    from glide_jax.hub.registry import MODEL_SETS, resolve

    started = time.perf_counter()
    loaded = {}

    def load(source):
        if source in (None, "none"):
            return None
        if source not in loaded:  # the embedded set's two roles share one upsampler
            loaded[source] = resolve(source, dtype=dtype)
        return loaded[source]

    clip_model = load(clip)
    if model in MODEL_SETS:
        names = MODEL_SETS[model]
        generate = Pipeline(load(names.base), load(upsampler or names.upsample), clip_model)
        inpaint = Pipeline(load(names.inpaint), load(upsampler or names.upsample_inpaint), clip_model)
    else:
        base = load(model)
        if base.config.unet.inpaint:
            raise ValueError(f"--model {model} is an inpainting model; serve it with a model set "
                             "(--model embedded or openai) so Generate and Edit have a text-to-image model")
        generate, inpaint = Pipeline(base, load(upsampler), clip_model), None
    return DemoModels(generate, inpaint, model, load_seconds=time.perf_counter() - started)
