"""From model sources to models ready to sample, and named sets of them.

``resolve(source)`` reads any source the hub accepts
(:func:`glide_jax.hub.registry.find_model`: an embedded or released name, a
model directory, a training workdir, a ``.pt`` file) and adds what sampling
needs: the tokenizer and the settings its ``sampling.json`` recommends.
``MODEL_SETS`` says which models play base, upsampler, inpainting base,
inpainting upsampler and CLIP in the CLI's and the demo's ``--model embedded``,
``--model embedded-fast`` and ``--model openai``; ``load_pipeline`` accepts a set's name too.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from glide_jax.errors import InputError
from glide_jax.hub.registry import find_model, tokenizer_for
from glide_jax.sampling.advice import SamplingAdvice
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.sampling.rewrites import PromptRewriter


@dataclasses.dataclass(frozen=True)
class ModelSet:
    """Which model plays each role of the CLI's commands."""

    base: str
    upsample: str
    inpaint: str
    upsample_inpaint: str
    clip: str


MODEL_SETS: Dict[str, ModelSet] = {
    # The embedded set has no inpainting upsampler: inpainted 32x32 samples go through the plain one.
    "embedded": ModelSet(base="embedded-base", upsample="embedded-upsample", inpaint="embedded-inpaint",
                         upsample_inpaint="embedded-upsample", clip="embedded-clip"),
    # The embedded set with the base distilled to a few steps (one conditional evaluation per step).
    "embedded-fast": ModelSet(base="embedded-fast", upsample="embedded-upsample", inpaint="embedded-inpaint",
                              upsample_inpaint="embedded-upsample", clip="embedded-clip"),
    "openai": ModelSet(base="base", upsample="upsample", inpaint="base-inpaint",
                       upsample_inpaint="upsample-inpaint", clip="clip"),
}
EMBEDDED_SETS = ("embedded", "embedded-fast")  # the sets of the package's own shapes models


def resolve(source, *, cache_dir=None, vocab_dir=None, preset: Optional[str] = None,
            dtype: Optional[str] = None) -> LoadedModel:
    """A model ready to sample from any source ``find_model`` accepts.

    ``cache_dir`` overrides where released checkpoints are downloaded and
    converted; ``vocab_dir`` where the default tokenizers' vocabularies are;
    ``preset`` names the model in a ``.pt`` file instead of identifying it;
    ``dtype`` (e.g. ``"bfloat16"``) is the compute dtype, None keeps the model's own.
    """
    found = find_model(source, cache_dir=cache_dir, preset=preset)
    raw, where = found.sampling_file()
    advice = SamplingAdvice.from_json(raw, where)
    loaded = LoadedModel(found.config, found.params, tokenizer_for(found.config, found.folder, vocab_dir),
                         sampling=advice.stage, guidance_scale=advice.guidance_scale,
                         prompt_rewrites=advice.prompt_rewrites, source=found.description)
    return loaded.with_dtype(dtype) if dtype is not None else loaded


_DEFAULT_UPSAMPLER = object()  # the upsampler of the base's model set, or the embedded one


def load_pipeline(base: str = "embedded", upsampler=_DEFAULT_UPSAMPLER, clip: Optional[str] = None, *,
                  cache_dir=None, vocab_dir=None, prompt_rewriter: Optional[PromptRewriter] = None,
                  dtype: Optional[str] = None) -> Pipeline:
    """A ``Pipeline`` from model sources (``upsampler=None`` for base-size samples).

    ``base`` may name a model set (``"embedded"``, the default, offline; ``"openai"``, GLIDE's released
    weights after ``glide-jax download``): its base, and its upsampler unless ``upsampler`` is given.
    Any other source is one model: ``load_pipeline("runs/base", None)``. ``dtype="bfloat16"`` makes every
    network compute in bfloat16 (parameters stay float32).
    """
    models = MODEL_SETS.get(str(base))
    if upsampler is _DEFAULT_UPSAMPLER:
        upsampler = (models or MODEL_SETS["embedded"]).upsample
    if models is not None:
        base = models.base
    if clip is not None and str(clip) in MODEL_SETS:
        clip = MODEL_SETS[str(clip)].clip

    def load(source):
        return resolve(source, cache_dir=cache_dir, vocab_dir=vocab_dir, dtype=dtype) if source else None

    return Pipeline(load(base), load(upsampler), load(clip), prompt_rewriter=prompt_rewriter)


def pipeline_for(model: str, *, inpaint: bool = False, upsampler: Optional[str] = None, clip: Optional[str] = None,
                 need_clip: bool = False, dtype: Optional[str] = None,
                 loaded: Optional[Dict[str, LoadedModel]] = None) -> Pipeline:
    """The pipeline of the CLI's and the demo's model options (``--model``, ``--upsampler``, ``--clip-model``).

    ``model`` is a model set (its base, or its inpainting base with ``inpaint``) or any one source;
    ``upsampler`` replaces the set's (``"none"``: base-size samples); ``need_clip`` (CLIP guidance,
    re-ranking) takes the set's CLIP unless ``clip`` names one. ``loaded`` is shared between calls so
    that two pipelines over the same models read each model once.
    """
    loaded = {} if loaded is None else loaded
    models = MODEL_SETS.get(model)
    if models is not None:
        base = models.inpaint if inpaint else models.base
        upsampler = upsampler or (models.upsample_inpaint if inpaint else models.upsample)
        clip = clip or (models.clip if need_clip else None)
    else:
        base = model
        if need_clip and not clip:
            raise InputError("CLIP guidance and re-ranking candidates with a custom --model need --clip-model")

    def load(source):
        if source in (None, "none"):
            return None
        if source not in loaded:
            loaded[source] = resolve(source, dtype=dtype)
        return loaded[source]

    return Pipeline(load(base), load(upsampler), load(clip))
