"""The output folder of one evaluation: its settings, one file per finished shard, the results.

Layout::

    settings.json       what the samples depend on; a rerun with other settings is refused
    shards/00000.npz    one per finished shard of sample indices (written whole, then renamed)
    statistics.npz      mu and sigma of the samples' features (pytorch-fid's format)
    results.json        every setting and every figure, written when all shards are done

A shard file holds, for each of its samples in index order, what the final figures are made of:
``features`` (float32 ``[n, D]``, the extractor's output as it came), ``clip`` (float64 per-pair
CLIP scores), ``extra/<scorer>/<key>`` (float64 per-sample values of extra scorers, NaN where a
scorer gave none) and ``seconds`` (sampling, scoring). The features themselves rather than their
float64 sums and scatter matrix: for shards of fewer than ``2 * D`` samples (4,096 for the
Inception) they take less room than a ``D x D`` float64 matrix, and the merged statistics are
computed from the very numbers the network gave, shard by shard in index order, whatever the
number of processes that wrote them.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from glide_jax.errors import InputError

SETTINGS_FILE = "settings.json"
RESULTS_FILE = "results.json"
STATISTICS_FILE = "statistics.npz"
SHARDS = "shards"


def canonical(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, keys as strings), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` through a temporary file and a rename."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_settings(out_dir: Path):
    """The settings a folder was started with, or None for a new folder."""
    path = out_dir / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not readable JSON ({e}); remove the folder or choose another --out") from None


def differences(saved: Mapping[str, Any], settings: Mapping[str, Any], prefix: str = "") -> list:
    """The dotted names of the settings that differ between two settings dicts."""
    out = []
    for key in sorted(set(saved) | set(settings)):
        a, b = saved.get(key), settings.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_or_clear(out_dir: Path, settings: Mapping[str, Any], replace_changed: bool, writer: bool) -> None:
    """Refuse (or, with ``replace_changed``, clear) a folder holding an evaluation with other settings.

    Every process reads and compares; only the ``writer`` (process 0) removes anything."""
    saved = read_settings(out_dir)
    if saved is None:
        return
    changed = differences(saved, canonical(settings))
    if not changed:
        return
    if not replace_changed:
        raise InputError(f"{out_dir} holds an evaluation with other settings ({', '.join(changed[:6])}"
                         f"{', ...' if len(changed) > 6 else ''}); use another output folder, or the same settings "
                         "to continue it")
    if writer:
        shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
        for name in (SETTINGS_FILE, RESULTS_FILE, STATISTICS_FILE):
            (out_dir / name).unlink(missing_ok=True)


def shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / SHARDS / f"{index:05d}.npz"


def write_shard(out_dir: Path, index: int, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write one finished shard whole, then rename it into place (a killed run leaves no half shard)."""
    path = shard_path(out_dir, index)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)
    return path


def read_shard(out_dir: Path, index: int, count: int) -> Dict[str, np.ndarray]:
    """The arrays of shard ``index``, checked to describe ``count`` samples."""
    path = shard_path(out_dir, index)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to sample that shard again") from e
    wrong = [name for name, array in arrays.items() if name != "seconds" and len(array) != count]
    if wrong:
        raise InputError(f"{path}: {wrong[0]} has {len(arrays[wrong[0]])} rows, the shard {count} samples; "
                         "delete it to sample that shard again")
    return arrays
