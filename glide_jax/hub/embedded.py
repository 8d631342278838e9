"""The models that ship inside the package: offline defaults trained by this project on captioned shapes.

Why: a new user should get an image from a prompt right after ``pip install``,
with no network and no 1.5 GB download. The four tiny models (a 32x32 base, a
32->64 upsampler, a base inpainting model and a noise-aware CLIP) were trained
with ``experiments/train_*.py`` and the ``*_embedded`` configs on the procedural
captioned-shapes data, so they only know that grammar ("a red circle above a
blue square"). ``tools/export_embedded.py`` writes them here.

Each model is a folder ``glide_jax/assets/embedded/<kind>/`` holding
``config.json`` (the tagged model config), ``params.zip`` (the EMA parameters
as float16 in numpy's ``.npz`` zip format, keys are ``/``-joined tree paths;
named ``.zip`` to keep it apart from the reference fixtures' ``.npz`` files),
``tokenizer.model`` (its
SentencePiece vocabulary), ``training.json`` (how it was made) and
``sampling.json`` (the sampler settings it is evaluated with). They load by
name: ``embedded-base``, ``embedded-upsample``, ``embedded-inpaint``,
``embedded-clip``; parameters are widened back to float32 on load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "embedded"
KINDS = ("base", "upsample", "inpaint", "clip")
PREFIX = "embedded-"
PARAMS_FILE = "params.zip"
NAMES = tuple(PREFIX + k for k in KINDS)
FLOAT16_MAX = float(np.finfo(np.float16).max)


def is_embedded(name: str) -> bool:
    return isinstance(name, str) and name in NAMES


def embedded_dir(name: str) -> Path:
    """Folder of an embedded model, by name (``embedded-base``) or kind (``base``)."""
    kind = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if kind not in KINDS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(NAMES)}")
    return ASSET_DIR / kind


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, path))
        else:
            out[path] = np.asarray(v)
    return out


def _unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def load_embedded(name: str) -> Tuple[Any, Dict[str, Any]]:
    """``(config, params)`` of an embedded model, parameters as float32 numpy arrays."""
    directory = embedded_dir(name)
    missing = [f for f in ("config.json", PARAMS_FILE) if not (directory / f).exists()]
    if missing:
        raise FileNotFoundError(f"embedded model {name!r} is incomplete: {', '.join(missing)} missing in {directory} "
                                "(a broken install? reinstall glide-jax, or rebuild with tools/export_embedded.py)")
    return load_embedded_dir(directory)


def load_embedded_dir(directory) -> Tuple[Any, Dict[str, Any]]:
    """``(config, params)`` from a folder in the embedded format (``config.json`` + ``params.zip``),
    such as an export written by ``tools/export_embedded.py`` before it is copied into the package."""
    from glide_jax.config import config_from_dict

    directory = Path(directory)
    config = config_from_dict(json.loads((directory / "config.json").read_text()))
    with np.load(directory / PARAMS_FILE) as npz:
        flat = {k: npz[k].astype(np.float32) for k in npz.files}
    return config, _unflatten(flat)


def training_info(name: str) -> Dict[str, Any]:
    """What ``training.json`` records about how an embedded model was trained."""
    path = embedded_dir(name) / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_embedded(directory, config, params, tokenizer_file, info: Optional[Dict[str, Any]] = None,
                  *, sampling: Optional[Dict[str, Any]] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Write one embedded model folder atomically; returns the float16 rounding statistics.

    Refuses to replace an existing folder unless ``overwrite`` and refuses
    parameters that do not fit float16 (they would silently become inf).
    ``sampling`` (sampler, steps, temperature, guidance_scale) becomes the
    model's ``sampling.json``: the settings its evaluation chose.
    """
    from flax.core import meta

    from glide_jax.hub.model_dir import atomic_directory
    from glide_jax.config import config_to_dict

    flat = _flatten(meta.unbox(params))
    too_big = [k for k, v in flat.items() if np.abs(v).max(initial=0.0) > FLOAT16_MAX]
    if too_big:
        raise ValueError(f"parameters out of float16 range: {', '.join(too_big[:5])}")
    half = {k: v.astype(np.float16) for k, v in flat.items()}
    worst = max(float(np.abs(half[k].astype(np.float32) - v.astype(np.float32)).max(initial=0.0)) for k, v in flat.items())
    stats = {"num_params": int(sum(v.size for v in flat.values())), "float16_max_abs_rounding": worst}
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        with open(tmp / PARAMS_FILE, "wb") as f:  # a file object: numpy keeps the name as given
            np.savez_compressed(f, **half)
        (tmp / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.model")
        (tmp / "training.json").write_text(json.dumps({**(info or {}), **stats}, indent=2) + "\n")
        if sampling:
            (tmp / "sampling.json").write_text(json.dumps(sampling, indent=2) + "\n")
    return stats
