"""The one on-disk format of a model ready to sample: a folder of plain files.

A model directory holds

* ``config.json``      -- the tagged model config (``glide_jax.config.config_to_dict``);
* ``params.zip``       -- the Flax variables (``{"params": ...}``) in numpy's ``.npz`` zip format, one
  array per ``/``-joined tree path (``params/unet/out_2/bias``), stored as float16 or float32 and
  widened to float32 on load (named ``.zip`` to keep it apart from the reference fixtures' ``.npz``);
* ``tokenizer.model``  -- optional: its sentencepiece vocabulary (else the family's default tokenizer);
* ``sampling.json``    -- optional: recommended sampler settings, guidance scale and prompt rewrites
  (read by :mod:`glide_jax.sampling.advice`);
* ``model_card.json`` / ``training.json`` -- optional, free-form provenance.

Why one format of plain files: the embedded assets, converted released
checkpoints and exported training runs all load the same way, with numpy
alone, and a folder can be inspected or copied without Orbax. Orbax stays the
format of training checkpoints (resumable, sharded), which are a different thing.

Writes go to a temporary sibling renamed into place, and an existing folder is
never replaced unless asked, so nothing already saved is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional

import numpy as np
from flax.core import meta

from glide_jax.config import config_from_dict, config_to_dict
from glide_jax.errors import InputError
from glide_jax.regular_files import is_present, open_regular_file, read_regular_bytes

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.zip"
TOKENIZER_FILE = "tokenizer.model"
SAMPLING_FILE = "sampling.json"
CARD_FILE = "model_card.json"
TRAINING_FILE = "training.json"
ORBAX_PARAMS_DIR = "params"  # the retired Orbax model format kept its parameters here
DTYPES = ("float32", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)


class OutdatedModelDirError(InputError):
    """A folder in the retired Orbax model format (``config.json`` + ``params/``)."""


@contextlib.contextmanager
def atomic_directory(directory, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``directory`` to fill; when the block succeeds it
    takes ``directory``'s place in one rename (the old folder is removed only after that).

    Refuses an existing ``directory`` unless ``overwrite``; on failure nothing is left behind.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; use overwrite=True (CLI: --overwrite) to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    """``{"a/b/c": array}`` of a nested mapping of arrays."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, path))
        else:
            flat[path] = np.asarray(value)
    return flat


def unflatten_tree(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def _plain_variables(params) -> Dict[str, np.ndarray]:
    params = meta.unbox(params)
    if not isinstance(params, Mapping) or "params" not in params:
        raise InputError("params must be Flax variables: a mapping {'params': parameter tree}")
    flat = flatten_tree(params)
    not_float = [k for k, v in flat.items() if not np.issubdtype(v.dtype, np.floating)]
    if not_float:
        raise InputError(f"parameters must be floating point; not so: {', '.join(not_float[:5])}")
    return flat


def save_model_dir(directory, config, params, *, dtype: str = "float32", tokenizer_file=None,
                   sampling: Optional[Mapping[str, Any]] = None, card: Optional[Mapping[str, Any]] = None,
                   overwrite: bool = False) -> Dict[str, Any]:
    """Write one model directory atomically; returns ``{"num_params", "dtype", "max_abs_rounding"}``.

    ``params`` are Flax variables (``{"params": ...}``, boxed or not), stored as
    ``dtype``; float16 halves the folder and is refused for values beyond its
    range (they would silently become inf). ``tokenizer_file`` is copied in as
    ``tokenizer.model``; ``sampling`` becomes ``sampling.json`` (see
    :mod:`glide_jax.sampling.advice` for its keys); ``card`` becomes
    ``model_card.json`` with the returned statistics added. Refuses to replace
    an existing folder unless ``overwrite``.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    flat = _plain_variables(params)
    if dtype == "float16":
        too_big = [k for k, v in flat.items() if np.abs(v).max(initial=0.0) > FLOAT16_MAX]
        if too_big:
            raise InputError(f"parameters out of float16 range: {', '.join(too_big[:5])}; save them as float32")
    stored = {k: v.astype(dtype) for k, v in flat.items()}
    rounding = max((float(np.abs(stored[k].astype(np.float64) - v.astype(np.float64)).max(initial=0.0))
                    for k, v in flat.items()), default=0.0)
    stats = {"num_params": int(sum(v.size for v in flat.values())), "dtype": dtype, "max_abs_rounding": rounding}
    if tokenizer_file is not None and not Path(tokenizer_file).is_file():
        raise FileNotFoundError(f"tokenizer file {tokenizer_file} does not exist")
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        with open(tmp / PARAMS_FILE, "wb") as f:  # a file object: numpy keeps the name as given
            np.savez_compressed(f, **stored)
        _write_json(tmp / CONFIG_FILE, config_to_dict(config))
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        if sampling:
            _write_json(tmp / SAMPLING_FILE, dict(sampling))
        if card is not None:
            _write_json(tmp / CARD_FILE, {**card, **stats})
    return stats


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _read_json(path: Path, what: str):
    try:
        return json.loads(read_regular_bytes(path, what).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({what}): {e}") from None


def check_model_dir(directory) -> Path:
    """``directory`` as a Path if it is a model directory in this format; a clear error otherwise."""
    directory = Path(directory)
    if not is_present(directory / CONFIG_FILE, "model config"):
        raise FileNotFoundError(f"{directory} is not a model directory (no {CONFIG_FILE})")
    if not is_present(directory / PARAMS_FILE, "parameter file"):
        if (directory / ORBAX_PARAMS_DIR).is_dir():
            raise OutdatedModelDirError(
                f"{directory} is a model directory in the retired Orbax format ({ORBAX_PARAMS_DIR}/); "
                f"convert the model again (`glide-jax convert NAME` for a released checkpoint, "
                f"`python -m tools.convert_checkpoint` for a .pt file) to get {PARAMS_FILE}")
        raise FileNotFoundError(f"{directory} is not a complete model directory (no {PARAMS_FILE})")
    return directory


def is_model_dir(path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / PARAMS_FILE).is_file()


def read_config(directory):
    path = Path(directory) / CONFIG_FILE
    try:
        return config_from_dict(_read_json(path, "the model config"))
    except (KeyError, TypeError, ValueError) as e:
        if str(path) in str(e):
            raise
        raise InputError(f"{path} is not a model config this version reads ({type(e).__name__}: {e})") from None


def read_params(directory) -> Dict[str, Any]:
    """The Flax variables of a model directory, every array float32."""
    path = Path(directory) / PARAMS_FILE
    with open_regular_file(path, "parameter file") as handle:
        if not zipfile.is_zipfile(handle):
            raise InputError(f"{path} is not a zip archive of arrays; it is damaged: save or convert the model again")
        handle.seek(0)
        try:
            with np.load(handle, allow_pickle=False) as npz:
                flat = {k: npz[k].astype(np.float32) for k in npz.files}
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # random bytes, truncation, bad CRC
            raise InputError(f"{path} is not a readable parameter file ({type(e).__name__}: {e}); "
                             "it is damaged: save or convert the model again") from None
    if not flat:
        raise InputError(f"{path} holds no parameters")
    return unflatten_tree(flat)


def read_sampling_file(directory) -> Optional[Dict[str, Any]]:
    """The raw contents of ``sampling.json``, or None when the folder has none."""
    path = Path(directory) / SAMPLING_FILE
    if not is_present(path, "sampling settings file"):
        return None
    value = _read_json(path, "recommended sampling settings")
    if not isinstance(value, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def tokenizer_file(directory) -> Optional[Path]:
    path = Path(directory) / TOKENIZER_FILE
    return path if is_present(path, "tokenizer vocabulary") else None


def load_model_dir(directory):
    """``(config, variables)`` of a model directory; the parameters are float32."""
    directory = check_model_dir(directory)
    return read_config(directory), read_params(directory)
