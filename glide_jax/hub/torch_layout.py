"""Mechanical correspondence between Flax parameter paths and PyTorch state-dict keys.

The Flax modules are named after the PyTorch module tree (``input_blocks_3_1``
for ``input_blocks.3.1``), so a key maps to a path by a rename plus a layout
change of the weight (PyTorch keeps ``[out, in, kh, kw]`` / ``[out, in]``, Flax
``[kh, kw, in, out]`` / ``[in, out]``). Conversion is strict: the missing,
unexpected and mis-shaped keys are reported together in one error (counted, the
first few named: :mod:`glide_jax.hub.key_report`).
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, Mapping, Tuple

import jax
import numpy as np
from flax import traverse_util
from flax.core import meta

from glide_jax.errors import InputError
from glide_jax.hub.key_report import summarise
from glide_jax.models.params import flat_shapes

Path = Tuple[str, ...]

_INDEXED = re.compile(r"^(input_blocks|output_blocks)_(\d+)_(\d+)$")
_SINGLE = re.compile(r"^(middle_block|time_embed|out|in_layers|out_layers|emb_layers|resblocks)_(\d+)$")
_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# Flax Dense layers that are 1x1 Conv1d in the reference (weights [out, in, 1]).
CONV1D_MODULES = frozenset({"qkv", "encoder_kv", "proj_out"})
# Wrapper modules that exist only on the Flax side.
_TRANSPARENT = frozenset({"params", "unet", "text"})


class CheckpointMismatchError(InputError):
    """A state dict does not match the model: counts and first few of the missing, unexpected and mis-shaped keys
    (the full sorted lists are the attributes ``missing``, ``unexpected`` and ``misshaped``)."""

    def __init__(self, what: str, missing: Iterable[str], unexpected: Iterable[str], misshaped: Iterable[str]):
        self.missing, self.unexpected, self.misshaped = sorted(missing), sorted(unexpected), sorted(misshaped)
        super().__init__(summarise(f"{what}: state dict does not match the model",
                                   (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                                    ("shape mismatches", self.misshaped))))


def _component(name: str) -> str:
    m = _INDEXED.match(name)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    m = _SINGLE.match(name)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    return name


def torch_key(path: Path) -> str:
    """The PyTorch key of a Flax parameter path."""
    modules = [_component(p) for p in path[:-1] if p not in _TRANSPARENT]
    leaf = path[-1]
    if len(path) >= 2 and path[-2] not in _TRANSPARENT:
        leaf = _LEAF.get(leaf, leaf)
    return ".".join(modules + [leaf])


def weight_kind(path: Path, ndim: int) -> str:
    if path[-1] != "kernel":
        return "copy"
    if ndim == 4:
        return "conv2d"
    if ndim == 2:
        return "conv1d" if path[-2] in CONV1D_MODULES else "linear"
    raise InputError(f"unsupported kernel rank {ndim} at {'/'.join(path)}")


def torch_shape(kind: str, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    if kind == "conv2d":
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if kind == "conv1d":
        return (shape[1], shape[0], 1)
    if kind == "linear":
        return (shape[1], shape[0])
    return tuple(shape)


def to_flax(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == "conv2d":
        return np.transpose(array, (2, 3, 1, 0))
    if kind == "conv1d":
        return np.transpose(array[:, :, 0])
    if kind == "linear":
        return np.transpose(array)
    return array


def to_torch(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == "conv2d":
        return np.transpose(array, (3, 2, 0, 1))
    if kind == "conv1d":
        return np.transpose(array)[:, :, None]
    if kind == "linear":
        return np.transpose(array)
    return array


def layout(abstract_params, key_fn: Callable[[Path], str] = torch_key) -> Dict[str, Tuple[Path, str, Tuple[int, ...]]]:
    """torch key → (flax path, weight kind, torch shape) for every parameter of a model."""
    out = {}
    for path, shape in flat_shapes(abstract_params).items():
        kind = weight_kind(path, len(shape))
        out[key_fn(path)] = (path, kind, torch_shape(kind, shape))
    return out


def from_torch(state_dict: Mapping[str, np.ndarray], abstract_params, what: str,
               key_fn: Callable[[Path], str] = torch_key, ignore: Callable[[str], bool] = lambda k: False):
    """Convert a PyTorch state dict to a Flax parameter tree shaped like ``abstract_params`` (float32)."""
    table = layout(abstract_params, key_fn)
    keys = {k for k in state_dict if not ignore(k)}
    missing = set(table) - keys
    unexpected = keys - set(table)
    misshaped = []
    for k in sorted(keys & set(table)):
        got = tuple(np.shape(state_dict[k]))
        if got != table[k][2]:
            misshaped.append(f"{k}: checkpoint {got} vs model {table[k][2]}")
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(what, missing, unexpected, misshaped)
    flat = {}
    for k, (path, kind, _) in table.items():
        flat[path] = np.ascontiguousarray(to_flax(kind, np.asarray(state_dict[k], dtype=np.float32)))
    return traverse_util.unflatten_dict(flat)


def to_torch_state(params, key_fn: Callable[[Path], str] = torch_key) -> Dict[str, np.ndarray]:
    """The inverse of ``from_torch``: a Flax parameter tree as a PyTorch-layout state dict."""
    flat = traverse_util.flatten_dict(meta.unbox(params))
    out = {}
    for path, value in flat.items():
        value = np.asarray(jax.device_get(value))
        out[key_fn(path)] = to_torch(weight_kind(path, value.ndim), value)
    return out
