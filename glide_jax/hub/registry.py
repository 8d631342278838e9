"""The one place that turns a name or a path into a model ready to sample.

``resolve(source)`` accepts

* an embedded name -- ``embedded-base``, ``embedded-upsample``, ``embedded-inpaint``, ``embedded-clip``
  (shipped in the package, offline);
* a released name -- ``base``, ``upsample``, ``base-inpaint``, ``upsample-inpaint``, ``clip``
  (converted from the downloaded ``.pt`` files into the cache on first use);
* a model directory (:mod:`glide_jax.hub.model_dir`);
* a training workdir (its newest EMA weights, :mod:`glide_jax.hub.workdir`);
* a ``.pt`` file of a released U-Net (identified from its weights, or named with ``preset=``),

and returns a :class:`~glide_jax.sampling.loaded_model.LoadedModel`: config,
float32 parameters, tokenizer (the folder's ``tokenizer.model``, else the
family's default), and the recommended sampling settings and prompt rewrites
of its ``sampling.json``. ``MODEL_SETS`` says which models play base,
upsampler, inpainting base, inpainting upsampler and CLIP in the CLI's
``--model embedded`` and ``--model openai``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from glide_jax.hub import embedded, model_dir, released, workdir
from glide_jax.models.families import family_of
from glide_jax.sampling.advice import SamplingAdvice
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.sampling.rewrites import PromptRewriter

CHECKPOINT_SUFFIX = ".pt"


@dataclasses.dataclass(frozen=True)
class ModelSet:
    """Which model plays each role of the CLI's commands."""

    base: str
    upsample: str
    inpaint: str
    upsample_inpaint: str
    clip: str


MODEL_SETS = {
    # The embedded set has no inpainting upsampler: inpainted 32x32 samples go through the plain one.
    "embedded": ModelSet(base="embedded-base", upsample="embedded-upsample", inpaint="embedded-inpaint",
                         upsample_inpaint="embedded-upsample", clip="embedded-clip"),
    "openai": ModelSet(base="base", upsample="upsample", inpaint="base-inpaint",
                       upsample_inpaint="upsample-inpaint", clip="clip"),
}


def model_set(name: str) -> ModelSet:
    if name not in MODEL_SETS:
        raise ValueError(f"unknown model set {name!r}; known: {', '.join(MODEL_SETS)}")
    return MODEL_SETS[name]


def accepted_sources() -> str:
    """What ``resolve`` accepts, for error messages."""
    return (f"an embedded name ({', '.join(embedded.NAMES)}), a released name ({', '.join(released.RELEASED)}), "
            "a model directory (config.json + params.zip), a training workdir (checkpoints/) "
            f"or a released U-Net's {CHECKPOINT_SUFFIX} file")


# ----------------------------------------------------------------------------- kinds of source


@dataclasses.dataclass(frozen=True)
class _Found:
    """A source read into memory: what every kind of source gives."""

    config: Any
    params: Dict[str, Any]
    folder: Optional[Path]  # where a tokenizer.model / sampling.json may sit
    description: str


def _from_embedded(name: str, cache_dir, preset) -> _Found:
    directory = embedded.embedded_dir(name)
    try:
        model_dir.check_model_dir(directory)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"embedded model {name!r} is incomplete ({e}); the installation is broken: "
                                "reinstall glide-jax") from None
    config, params = model_dir.load_model_dir(directory)
    return _Found(config, params, directory, name)


def _from_released(name: str, cache_dir, preset) -> _Found:
    directory = released.ensure_converted(name, cache_dir)
    config, params = model_dir.load_model_dir(directory)
    return _Found(config, params, directory, f"{name} (converted in {directory})")


def _from_model_dir(path: str, cache_dir, preset) -> _Found:
    config, params = model_dir.load_model_dir(path)
    return _Found(config, params, Path(path), str(path))


def _from_workdir(path: str, cache_dir, preset) -> _Found:
    config, params, _ = workdir.load_workdir(path)
    folder = workdir.checkpoints_of(path).parent
    return _Found(config, params, folder, f"{path} (newest EMA weights)")


def _from_checkpoint_file(path: str, cache_dir, preset) -> _Found:
    config, params, name = released.convert_checkpoint_file(path, preset)
    how = "as named" if preset else "identified from its weights"
    return _Found(config, params, None, f"{path} ({name}, {how})")


_LOADERS: Dict[str, Callable[..., _Found]] = {
    "embedded": _from_embedded,
    "released": _from_released,
    "model directory": _from_model_dir,
    "training workdir": _from_workdir,
    "checkpoint file": _from_checkpoint_file,
}


def source_kind(source) -> str:
    """Which kind of source ``source`` is (a key of the loaders); a clear error for anything else."""
    if not isinstance(source, (str, Path)):
        raise ValueError(f"a model source is a name or a path, got {type(source).__name__}")
    text = str(source)
    if embedded.is_embedded(text):
        return "embedded"
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == CHECKPOINT_SUFFIX:
        return "checkpoint file"
    if path.is_dir():
        if (path / model_dir.CONFIG_FILE).is_file():
            model_dir.check_model_dir(path)  # an old or incomplete folder says what is wrong
            return "model directory"
        if workdir.is_workdir(path):
            return "training workdir"
        raise FileNotFoundError(f"{text} is neither a model directory (no {model_dir.CONFIG_FILE}) nor a training "
                                f"workdir (no {workdir.CHECKPOINT_DIR}/); give {accepted_sources()}")
    if text in released.RELEASED:
        return "released"
    raise FileNotFoundError(f"no model {text!r}: give {accepted_sources()}")


# ----------------------------------------------------------------------------- the resolver


def tokenizer_for(config, folder: Optional[Path] = None, vocab_dir=None):
    """The folder's ``tokenizer.model`` when it has one, else the model family's default tokenizer."""
    from glide_jax.tokenizers import get_tokenizer

    own = model_dir.tokenizer_file(folder) if folder is not None else None
    if own is not None:
        return get_tokenizer("sentencepiece", own)
    return get_tokenizer(family_of(config).default_tokenizer, vocab_dir)


def _read(source, cache_dir, preset) -> _Found:
    kind = source_kind(source)
    if preset is not None and kind != "checkpoint file":
        raise ValueError(f"preset= is for {CHECKPOINT_SUFFIX} files; {source!r} is a {kind}")
    argument = str(source) if kind in ("embedded", "released") else str(Path(str(source)).expanduser())
    return _LOADERS[kind](argument, cache_dir, preset)


def load_model(source, *, cache_dir=None, preset: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """``(config, {"params": ...})`` of any source ``resolve`` accepts, without a tokenizer
    (what a warm start of training needs)."""
    found = _read(source, cache_dir, preset)
    return found.config, found.params


def resolve(source, *, cache_dir=None, vocab_dir=None, preset: Optional[str] = None,
            dtype: Optional[str] = None) -> LoadedModel:
    """A model ready to sample from any accepted source (see the module docstring).

    ``cache_dir`` overrides where released checkpoints are downloaded and
    converted; ``vocab_dir`` where the default tokenizers' vocabularies are;
    ``preset`` names the model in a ``.pt`` file instead of identifying it;
    ``dtype`` (e.g. ``"bfloat16"``) is the compute dtype, None keeps the model's own.
    """
    found = _read(source, cache_dir, preset)
    advice = SamplingAdvice()
    if found.folder is not None:
        raw = model_dir.read_sampling_file(found.folder)
        advice = SamplingAdvice.from_json(raw, str(found.folder / model_dir.SAMPLING_FILE))
    loaded = LoadedModel(found.config, found.params, tokenizer_for(found.config, found.folder, vocab_dir),
                         sampling=advice.stage, guidance_scale=advice.guidance_scale,
                         prompt_rewrites=advice.prompt_rewrites, source=found.description)
    return loaded.with_dtype(dtype) if dtype is not None else loaded


def load_pipeline(base: str = "embedded-base", upsampler: Optional[str] = "embedded-upsample",
                  clip: Optional[str] = None, *, cache_dir=None, vocab_dir=None,
                  prompt_rewriter: Optional[PromptRewriter] = None, dtype: Optional[str] = None) -> Pipeline:
    """A ``Pipeline`` from model sources (``upsampler=None`` for base-size samples).

    The defaults are the package's embedded shapes models (offline); GLIDE's released
    weights are ``load_pipeline("base", "upsample", "clip")`` after ``glide-jax download``.
    ``dtype="bfloat16"`` makes every network compute in bfloat16 (parameters stay float32).
    """
    load = lambda source: resolve(source, cache_dir=cache_dir, vocab_dir=vocab_dir, dtype=dtype) if source else None
    return Pipeline(load(base), load(upsampler), load(clip), prompt_rewriter=prompt_rewriter)
