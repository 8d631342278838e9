"""Reading a reference fixture and comparing against it.

A fixture is ``X.npz`` (arrays in the PyTorch reference's NCHW layout and
torch weight layouts) plus ``X.json`` (the exact configuration that produced
them). Every check reports, per output, ``(max abs error, max relative
error)``; the comparisons here define those numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Tuple

import numpy as np

from glide_jax.errors import InputError

Errors = Dict[str, Tuple[float, float]]  # output name -> (max abs error, max relative error)


def load_fixture(npz_path) -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(json configuration, arrays)`` of a fixture; ``npz_path`` may name either file or omit the suffix."""
    npz_path = Path(npz_path)
    if npz_path.suffix != ".npz":
        npz_path = npz_path.with_suffix(".npz")
    meta_path = npz_path.with_suffix(".json")
    if not npz_path.exists():
        raise FileNotFoundError(f"fixture {npz_path} does not exist")
    if not meta_path.exists():
        raise FileNotFoundError(f"fixture {npz_path} has no configuration file {meta_path}")
    with open(meta_path) as f:
        meta = json.load(f)
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, keyed by the rest of the name."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def nhwc(a) -> np.ndarray:
    """Reference images ``[..., C, H, W]`` (batches, or stacks of batches) in glide_jax's ``[..., H, W, C]``."""
    a = np.asarray(a)
    if a.ndim < 3:
        raise InputError(f"an image array needs at least 3 axes (C, H, W), got shape {a.shape}")
    return np.moveaxis(a, -3, -1)


def nchw(a) -> np.ndarray:
    """glide_jax images ``[..., H, W, C]`` in the reference's ``[..., C, H, W]``."""
    a = np.asarray(a)
    if a.ndim < 3:
        raise InputError(f"an image array needs at least 3 axes (H, W, C), got shape {a.shape}")
    return np.moveaxis(a, -1, -3)


def compare(got, want) -> Tuple[float, float]:
    """(max |got - want|, max |got - want| / max(|want|, 1e-6)); a shape mismatch is an error."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise InputError(f"shape mismatch: got {got.shape}, reference {want.shape}")
    diff = np.abs(got - want)
    rel = diff / np.maximum(np.abs(want), 1e-6)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def compare_exact(got, want) -> Tuple[float, float]:
    """``compare`` for integer tables (timestep maps, betas): a shape mismatch, such as a different
    number of kept steps, is reported as an infinite error instead of raised."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    return compare(got, want)


def compare_scaled(got, want) -> Tuple[float, float]:
    """(max |got - want| / max(1, |want|), max relative error), for arrays with huge entries.

    Absolute below 1 and relative above, so one tolerance is meaningful for
    values that reach 1e4..1e5 (unclipped x_0 near t=T, where float32 only
    resolves ~1e-3) as well as for values near 0.
    """
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise InputError(f"shape mismatch: got {got.shape}, reference {want.shape}")
    diff = np.abs(got - want)
    return float((diff / np.maximum(np.abs(want), 1.0)).max(initial=0.0)), compare(got, want)[1]


def compare_conditioned(got, want, sensitivity) -> Tuple[float, float]:
    """(max |got - want| / sensitivity, max relative error): the error in units of the model output,
    for steps that amplify it (``sensitivity`` broadcasts against the arrays, e.g. one value per row)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise InputError(f"shape mismatch: got {got.shape}, reference {want.shape}")
    diff = np.abs(got - want)
    return float((diff / sensitivity).max(initial=0.0)), compare(got, want)[1]
