"""Read PyTorch ``.pt`` state dicts without torch and without running pickled code.

A modern ``torch.save`` file is a zip archive: ``<root>/data.pkl`` pickles the
structure (an ``OrderedDict`` of tensors rebuilt by ``torch._utils._rebuild_tensor_v2``)
and each tensor storage is a raw little-endian blob ``<root>/data/<key>``. The
unpickler here resolves only the handful of globals a state dict needs and maps
them to NumPy; anything else (arbitrary callables a malicious file could name)
is refused, so loading a checkpoint cannot execute code.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Dict

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


def _ordered_dict(*args, **kwargs):
    return collections.OrderedDict(*args, **kwargs)


_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, fileobj, archive: zipfile.ZipFile, root: str):
        super().__init__(fileobj)
        self._archive = archive
        self._root = root
        self._storages: Dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a plain tensor state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        return self._storages[key]


def load_state_dict(path) -> Dict[str, np.ndarray]:
    """Load a ``torch.save``-d state dict as ``{name: numpy array}``, never executing pickled code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format PyTorch checkpoint; legacy (pre-1.6) files need "
            "`pip install glide-jax[torch]` and the torch loader (torch.load(weights_only=True))"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        root = pickles[0].rsplit("/", 1)[0] if "/" in pickles[0] else ""
        with archive.open(pickles[0]) as f:
            obj = _SafeUnpickler(f, archive, root).load()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {str(k): np.asarray(v) for k, v in obj.items()}


def load_state_dict_with_torch(path) -> Dict[str, np.ndarray]:
    """The same through torch itself (optional extra), with ``weights_only=True``."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("torch is not installed: `pip install glide-jax[torch]`, or use load_state_dict") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
