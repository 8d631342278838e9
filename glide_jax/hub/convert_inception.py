"""pytorch-fid's Inception state dict (``pt_inception-2015-12-05-*.pth``) as ``FIDInceptionV3`` variables.

The Flax module keeps torchvision's layer names, so the key table is derived
from the module's own variable tree (``abstract_variables``, nothing
allocated) by one rule per leaf kind:

=========================  ======================  ===================================
Flax variable              torch key               layout
=========================  ======================  ===================================
``params/X/conv/kernel``   ``X.conv.weight``       ``[O, I, kh, kw]`` -> ``[kh, kw, I, O]``
``params/X/bn/scale``      ``X.bn.weight``         as is
``params/X/bn/bias``       ``X.bn.bias``           as is
``batch_stats/X/bn/mean``  ``X.bn.running_mean``   as is
``batch_stats/X/bn/var``   ``X.bn.running_var``    as is
=========================  ======================  ===================================

``X`` is a dotted path such as ``Mixed_6b.branch7x7_2``. The state dict may
also hold ``*.num_batches_tracked`` (batch-norm bookkeeping) and the 1008-way
classifier ``fc.weight`` / ``fc.bias``; FID never uses them, so they are
accepted and dropped. Anything else, or anything missing or mis-shaped, is
refused with one error that counts each kind of problem and names the first few.

Both of torch's file formats are read (:func:`glide_jax.hub.torch_zip.load_state_dict`):
the released weights predate the zip format.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Tuple

import numpy as np
from flax import traverse_util

from glide_jax.errors import InputError
from glide_jax.hub.torch_zip import load_state_dict
from glide_jax.models.inception import abstract_variables

__all__ = ["IGNORED_KEYS", "TorchSource", "inception_from_torch", "key_table", "load_inception", "torch_shapes"]

# Keys pytorch-fid's file has that the pool3 features never read.
IGNORED_KEYS = ("fc.weight", "fc.bias")
_IGNORED_SUFFIX = ".num_batches_tracked"
_LEAVES = {("conv", "kernel"): "weight", ("bn", "scale"): "weight", ("bn", "bias"): "bias",
           ("bn", "mean"): "running_mean", ("bn", "var"): "running_var"}
_SHOWN = 5  # names listed per kind of problem


class TorchSource(NamedTuple):
    """Where one Flax variable comes from: the torch key and whether it is a conv kernel (transposed)."""

    key: str
    is_kernel: bool
    shape: Tuple[int, ...]  # the Flax shape


def key_table() -> Dict[Tuple[str, ...], TorchSource]:
    """``{(collection, *flax path): TorchSource}`` for every variable of ``FIDInceptionV3``."""
    table = {}
    for path, leaf in traverse_util.flatten_dict(abstract_variables()).items():
        *layer, module, name = path[1:]
        torch_name = _LEAVES.get((module, name))
        if torch_name is None:
            raise AssertionError(f"no torch name for the Flax variable {'/'.join(path)}")
        table[path] = TorchSource(".".join([*layer, module, torch_name]), name == "kernel", tuple(leaf.shape))
    return table


def torch_shapes() -> Dict[str, Tuple[int, ...]]:
    """torch key -> shape (conv kernels ``[O, I, kh, kw]``) of every tensor the conversion reads."""
    return {entry.key: tuple(entry.shape[i] for i in (3, 2, 0, 1)) if entry.is_kernel else entry.shape
            for entry in key_table().values()}


def _summary(kind: str, names: List[str]) -> str:
    shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
    return f"{len(names)} {kind} ({shown})"


def inception_from_torch(state: Mapping[str, np.ndarray], source: str = "the state dict") -> dict:
    """``{"params": ..., "batch_stats": ...}`` for ``FIDInceptionV3`` from pytorch-fid's state dict (float32).

    ``source`` names the state dict in errors (a file name, usually).
    """
    table = key_table()
    wanted = {entry.key: entry for entry in table.values()}
    missing = [key for key in wanted if key not in state]
    unexpected = [key for key in state if key not in wanted and key not in IGNORED_KEYS
                  and not key.endswith(_IGNORED_SUFFIX)]
    misshaped = []
    for key, entry in wanted.items():
        if key in state:
            torch_shape = tuple(np.shape(state[key]))
            flax_shape = tuple(torch_shape[i] for i in (2, 3, 1, 0)) if entry.is_kernel and len(torch_shape) == 4 \
                else torch_shape
            if flax_shape != entry.shape:
                expected = tuple(entry.shape[i] for i in (3, 2, 0, 1)) if entry.is_kernel else entry.shape
                misshaped.append(f"{key} {torch_shape} != {expected}")
    problems = [_summary(kind, names) for kind, names in (("missing", missing), ("unexpected", unexpected),
                                                           ("mis-shaped", misshaped)) if names]
    if problems:
        raise InputError(f"{source} is not pytorch-fid's FID Inception state dict: " + "; ".join(problems))
    flat = {}
    for path, entry in table.items():
        array = np.asarray(state[entry.key], dtype=np.float32)
        flat[path] = np.ascontiguousarray(array.transpose(2, 3, 1, 0)) if entry.is_kernel else array
    return traverse_util.unflatten_dict(flat)


def load_inception(path) -> dict:
    """Read pytorch-fid's ``.pth`` (zip or legacy format, never executing pickled code) and convert it."""
    return inception_from_torch(load_state_dict(path), source=str(path))
