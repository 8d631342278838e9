"""The one place that turns a model's name or path into its config and parameters.

``find_model(source)`` accepts

* an embedded name -- ``embedded-base``, ``embedded-upsample``, ``embedded-inpaint``, ``embedded-clip``
  (shipped in the package, offline);
* a released name -- ``base``, ``upsample``, ``base-inpaint``, ``upsample-inpaint``, ``clip``
  (converted from the downloaded ``.pt`` files into the cache on first use);
* a model directory (:mod:`glide_jax.hub.model_dir`);
* a training workdir (its newest EMA weights, :mod:`glide_jax.hub.workdir`);
* a ``.pt`` file of a released U-Net (identified from its weights, or named with ``preset=``),

and returns a :class:`FoundModel`: config, float32 parameters and the folder
that may hold its ``tokenizer.model`` and ``sampling.json``. Turning that into
a model ready to sample (tokenizer, recommended settings) is the sampling
side's business (``glide_jax.sampling.loading.resolve``); a warm start of
training needs only ``load_model``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from glide_jax.errors import InputError
from glide_jax.family import family_of
from glide_jax.hub import embedded, model_dir, released, workdir
from glide_jax.hub.checkpoint_layout import CHECKPOINT_DIR, checkpoints_of
from glide_jax.tokenizers import get_tokenizer

CHECKPOINT_SUFFIX = ".pt"


def accepted_sources() -> str:
    """What ``find_model`` accepts, for error messages."""
    return (f"an embedded name ({', '.join(embedded.NAMES)}), a released name ({', '.join(released.RELEASED)}), "
            "a model directory (config.json + params.zip), a training workdir (checkpoints/) "
            f"or a released U-Net's {CHECKPOINT_SUFFIX} file")


# ----------------------------------------------------------------------------- kinds of source


@dataclasses.dataclass(frozen=True)
class FoundModel:
    """A source read into memory: what every kind of source gives."""

    config: Any
    params: Dict[str, Any]  # {"params": ...}, float32
    folder: Optional[Path]  # where a tokenizer.model / sampling.json may sit
    description: str  # where it came from, for messages

    def sampling_file(self) -> Tuple[Optional[Dict[str, Any]], str]:
        """The folder's ``sampling.json`` as read (None without one) and its path, for messages."""
        if self.folder is None:
            return None, ""
        return model_dir.read_sampling_file(self.folder), str(self.folder / model_dir.SAMPLING_FILE)


def _from_embedded(name: str, cache_dir, preset) -> FoundModel:
    directory = embedded.embedded_dir(name)
    try:
        model_dir.check_model_dir(directory)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"embedded model {name!r} is incomplete ({e}); the installation is broken: "
                                "reinstall glide-jax") from None
    config, params = model_dir.load_model_dir(directory)
    return FoundModel(config, params, directory, name)


def _from_released(name: str, cache_dir, preset) -> FoundModel:
    directory = released.ensure_converted(name, cache_dir)
    config, params = model_dir.load_model_dir(directory)
    return FoundModel(config, params, directory, f"{name} (converted in {directory})")


def _from_model_dir(path: str, cache_dir, preset) -> FoundModel:
    config, params = model_dir.load_model_dir(path)
    return FoundModel(config, params, Path(path), str(path))


def _from_workdir(path: str, cache_dir, preset) -> FoundModel:
    config, params, _ = workdir.load_workdir(path)
    folder = checkpoints_of(path).parent
    return FoundModel(config, params, folder, f"{path} (newest EMA weights)")


def _from_checkpoint_file(path: str, cache_dir, preset) -> FoundModel:
    config, params, name = released.convert_checkpoint_file(path, preset)
    how = "as named" if preset else "identified from its weights"
    return FoundModel(config, params, None, f"{path} ({name}, {how})")


_LOADERS: Dict[str, Callable[..., FoundModel]] = {
    "embedded": _from_embedded,
    "released": _from_released,
    "model directory": _from_model_dir,
    "training workdir": _from_workdir,
    "checkpoint file": _from_checkpoint_file,
}


def source_kind(source) -> str:
    """Which kind of source ``source`` is (a key of the loaders); a clear error for anything else."""
    if not isinstance(source, (str, Path)):
        raise InputError(f"a model source is a name or a path, got {type(source).__name__}")
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
                                f"workdir (no {CHECKPOINT_DIR}/); give {accepted_sources()}")
    if text in released.RELEASED:
        return "released"
    raise FileNotFoundError(f"no model {text!r}: give {accepted_sources()}")


# ----------------------------------------------------------------------------- the resolver


def tokenizer_for(config, folder: Optional[Path] = None, vocab_dir=None):
    """The folder's ``tokenizer.model`` when it has one, else the model family's default tokenizer."""
    own = model_dir.tokenizer_file(folder) if folder is not None else None
    if own is not None:
        return get_tokenizer("sentencepiece", own)
    return get_tokenizer(family_of(config).default_tokenizer, vocab_dir)


def find_model(source, *, cache_dir=None, preset: Optional[str] = None) -> FoundModel:
    """Read any accepted source (see the module docstring) into memory.

    ``cache_dir`` overrides where released checkpoints are downloaded and
    converted; ``preset`` names the model in a ``.pt`` file instead of identifying it.
    """
    kind = source_kind(source)
    if preset is not None and kind != "checkpoint file":
        raise InputError(f"preset= is for {CHECKPOINT_SUFFIX} files; {source!r} is a {kind}")
    argument = str(source) if kind in ("embedded", "released") else str(Path(str(source)).expanduser())
    return _LOADERS[kind](argument, cache_dir, preset)


def load_model(source, *, cache_dir=None, preset: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """``(config, {"params": ...})`` of any source ``find_model`` accepts, without a tokenizer
    (what a warm start of training needs)."""
    found = find_model(source, cache_dir=cache_dir, preset=preset)
    return found.config, found.params
