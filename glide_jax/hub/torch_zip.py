"""Read PyTorch ``.pt`` state dicts without torch, without running pickled code, and without trusting the file.

A modern ``torch.save`` file is a zip archive: ``<root>/data.pkl`` pickles the
structure (an ``OrderedDict`` of tensors rebuilt by ``torch._utils._rebuild_tensor_v2``)
and each tensor storage is a raw blob ``<root>/data/<key>`` (little-endian unless
``<root>/byteorder`` says ``big``). The unpickler here resolves only the handful
of globals a state dict needs; anything else (arbitrary callables a malicious
file could name) is refused, so loading a checkpoint cannot execute code.

A checkpoint is untrusted input, so every number in it is checked before it is
used: member sizes before anything is decompressed (``checkpoint_zip``), the
pickle's memo indices, nesting and object count before it is unpickled
(``pickle_check``), and each tensor's offset, sizes and strides against its
storage before a single element is read. Storages are decompressed one at a
time, after every tensor has been checked, and only those the state dict uses.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Tuple

import ml_dtypes
import numpy as np

from glide_jax.hub.checkpoint_zip import (DEFAULT_MAX_COMPRESSION_RATIO, DEFAULT_MAX_MEMBER_BYTES,
                                          DEFAULT_MAX_PICKLE_BYTES, DEFAULT_MAX_TOTAL_BYTES, CheckpointFormatError,
                                          CheckpointZip, check_limits, clip, describe, format_bytes)
from glide_jax.hub.pickle_check import check_pickle
from glide_jax.regular_files import check_regular_file

__all__ = ["CheckpointFormatError", "RefusedGlobalError", "load_state_dict", "load_state_dict_with_torch",
           "read_manifest"]

MAX_NDIM = 32
MAX_DIM = 1 << 48
_MAX_STORAGE_KEY_CHARS = 256

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


class RefusedGlobalError(CheckpointFormatError, pickle.UnpicklingError):
    """The pickle names a callable outside the plain-state-dict set: honouring it could run code."""


class _StorageType(NamedTuple):
    """What ``torch.FloatStorage`` etc. unpickle to; immutable, so a pickle's BUILD opcode cannot retarget it."""

    name: str
    dtype: np.dtype


_STORAGE_TYPES = {name: _StorageType(name, np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()}


class _Storage(NamedTuple):
    """A storage the pickle refers to: checked against its member's headers, decompressed only when built from."""

    key: str
    dtype: np.dtype  # the element type the tensors are returned as
    numel: int
    member: zipfile.ZipInfo


class _TensorRecord(NamedTuple):
    """The arguments of ``_rebuild_tensor_v2``, kept unchecked until the tensor's state-dict key is known."""

    storage: object
    offset: object
    size: object
    stride: object


def _tensor_record(*args) -> _TensorRecord:
    """``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``, unchecked yet."""
    if not 4 <= len(args) <= 7:
        raise ValueError(f"_rebuild_tensor_v2 takes 4 to 7 arguments, got {len(args)}")
    return _TensorRecord(*args[:4])


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: CheckpointZip, root: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._storages: Dict[str, _Storage] = {}
        # Fresh functions per load: a BUILD opcode aimed at one of them can only touch this load's copy.
        self._globals = {
            ("collections", "OrderedDict"): lambda *args: collections.OrderedDict(*args),
            ("torch._utils", "_rebuild_tensor_v2"): lambda *args: _tensor_record(*args),
            ("torch._utils", "_rebuild_parameter"): lambda data, *_ignored: data,
            ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_ignored: data,
        }

    def find_class(self, module, name):
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise RefusedGlobalError(f"{self._archive.path}: refusing to load {clip(module, 100)}.{clip(name, 100)}: "
                                 "not part of a plain tensor state dict")

    def persistent_load(self, pid):
        archive = self._archive
        if not (type(pid) is tuple and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise archive.error(f"unsupported persistent id ({describe(pid)}); expected "
                                "('storage', type, key, location, numel)")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(key, str) and 0 < len(key) <= _MAX_STORAGE_KEY_CHARS):
            raise archive.error(f"storage key {describe(key)} is not a short string")
        if not (isinstance(storage_type, _StorageType) and _STORAGE_TYPES.get(storage_type.name) is storage_type):
            raise archive.error(f"storage {key!r} has unknown storage type {describe(storage_type)}")
        if type(numel) is not int or numel < 0:
            raise archive.error(f"storage {key!r} declares {describe(numel)} elements")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != storage_type.dtype or cached.numel != numel:
                raise archive.error(f"storage {key!r} is declared twice with different types or sizes")
            return cached
        member = archive.check(f"{self._root}data/{key}", f"storage {key!r}", archive.limits["max_member_bytes"],
                               expected_bytes=numel * storage_type.dtype.itemsize)
        storage = self._storages[key] = _Storage(key, storage_type.dtype, numel, member)
        return storage


class _TensorPlan(NamedTuple):
    storage: _Storage
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    nbytes: int


def _plan_tensor(record: _TensorRecord, name: str, archive: CheckpointZip) -> _TensorPlan:
    """Check one tensor against its storage, in Python integers so nothing can overflow."""
    storage = record.storage
    if not isinstance(storage, _Storage):
        raise archive.error(f"tensor {describe(name)}: its storage is {describe(storage)}, "
                            "not a storage of the archive")

    def refuse(problem: str) -> CheckpointFormatError:
        return archive.error(f"tensor {describe(name)} (storage {storage.key!r}): {problem}")

    def integers(value, what: str) -> Tuple[int, ...]:
        if not isinstance(value, (tuple, list)):
            raise refuse(f"{what} is {describe(value)}, not a tuple of integers")
        if len(value) > MAX_NDIM:
            raise refuse(f"{what} has {len(value)} dimensions, more than {MAX_NDIM}")
        if not all(type(item) is int for item in value):
            raise refuse(f"{what} {tuple(describe(item) for item in value)} holds a non-integer")
        return tuple(value)

    offset = record.offset
    if type(offset) is not int or offset < 0:
        raise refuse(f"storage offset {describe(offset)} is not a non-negative integer")
    size, stride = integers(record.size, "size"), integers(record.stride, "stride")
    if len(size) != len(stride):
        raise refuse(f"size has {len(size)} dimensions but stride has {len(stride)}")
    if any(not 0 <= dim <= MAX_DIM for dim in size):
        raise refuse(f"size {_describe_all(size)} has a negative dimension or one above {MAX_DIM}")
    if any(step < 0 for step in stride):
        raise refuse(f"stride {_describe_all(stride)} has a negative step")
    numel = storage.numel
    count = math.prod(size)
    if count == 0:
        if offset > numel:
            raise refuse(f"storage offset {describe(offset)} is past the end of a storage of {numel} elements")
    else:
        last = offset + sum((dim - 1) * step for dim, step in zip(size, stride))
        if last >= numel:
            raise refuse(f"size {size}, stride {_describe_all(stride)} and offset {describe(offset)} reach element "
                         f"{describe(last)} of a storage of {numel} elements")
    return _TensorPlan(storage, offset, size, stride, count * storage.dtype.itemsize)


def _describe_all(values) -> str:
    return "(" + ", ".join(describe(value) for value in values) + ")"


def _build_tensor(plan: _TensorPlan, raw: np.ndarray) -> np.ndarray:
    """Copy a bounds-checked view out of the storage's elements ``raw``, in native byte order."""
    itemsize = plan.storage.dtype.itemsize
    out = np.empty(plan.size, dtype=np.dtype(f"=u{itemsize}"))
    if out.size:
        # Dimensions of length 1 never step, so their (possibly huge) strides are dropped rather than multiplied.
        byte_strides = tuple(step * itemsize if dim > 1 else 0 for dim, step in zip(plan.size, plan.stride))
        view = np.lib.stride_tricks.as_strided(raw[plan.offset:], shape=plan.size, strides=byte_strides,
                                               writeable=False)
        np.copyto(out, view)
    if plan.storage.dtype == np.bool_:
        return out != 0
    return out.view(plan.storage.dtype)


def _build_tensors(plans: Dict[str, _TensorPlan], archive: CheckpointZip, byteorder: str) -> Dict[str, np.ndarray]:
    """Decompress one storage at a time and build its tensors, so only one storage is in memory beside them."""
    by_storage: Dict[str, List[str]] = {}
    for name, plan in plans.items():
        by_storage.setdefault(plan.storage.key, []).append(name)
    tensors: Dict[str, np.ndarray] = dict.fromkeys(plans)
    order = "<" if byteorder == "little" else ">"
    for key, names in by_storage.items():
        storage = plans[names[0]].storage
        raw = np.frombuffer(archive.read(storage.member, f"storage {key!r}"),
                            dtype=np.dtype(f"{order}u{storage.dtype.itemsize}"))
        for name in names:
            tensors[name] = _build_tensor(plans[name], raw)
    return tensors


def _select_state_dict(obj, archive: CheckpointZip) -> Dict[str, _TensorRecord]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise archive.error(f"does not hold a state dict (got {describe(obj)})")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise archive.error(f"state dict key {describe(key)} is not a string")
        if not isinstance(value, _TensorRecord):
            raise archive.error(f"state dict entry {describe(key)} holds {describe(value)}, not a tensor")
    return obj


def _find_root(archive: CheckpointZip) -> str:
    pickles = [name for name in archive.members if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise archive.error(f"expected one data.pkl in the archive, found {clip(str(pickles[:5]))}")
    return pickles[0][: -len("data.pkl")]


def _read_byteorder(archive: CheckpointZip, root: str) -> str:
    name = f"{root}byteorder"
    if name not in archive.members:
        return "little"
    value = bytes(archive.read(archive.check(name, "byteorder record", 16), "byteorder record"))
    if value not in (b"little", b"big"):
        raise archive.error(f"byteorder record is {describe(value.decode('latin-1'))}, not 'little' or 'big'")
    return value.decode()


def _load_records(archive: CheckpointZip, root: str) -> Dict[str, _TensorRecord]:
    name = f"{root}data.pkl"
    data = bytes(archive.read(archive.check(name, "the pickle", archive.limits["max_pickle_bytes"]), "the pickle"))
    check_pickle(data, archive)
    try:
        obj = _SafeUnpickler(data, archive, root).load()
    except (CheckpointFormatError, MemoryError):
        raise
    except Exception as e:  # the unpickler signals malformed input with many exception types
        raise archive.error(f"the pickle is malformed ({type(e).__name__}: {clip(str(e))})") from e
    return _select_state_dict(obj, archive)


def load_state_dict(path, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
                    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO) -> Dict[str, np.ndarray]:
    """Load a ``torch.save``-d state dict as ``{name: numpy array}``, never executing pickled code.

    ``max_member_bytes`` bounds any one decompressed member, ``max_pickle_bytes``
    the pickle, and ``max_total_bytes`` both everything decompressed and the arrays
    built from it (views of one storage each cost a copy). Beyond 16 MiB, neither a
    member nor the file as a whole may expand more than ``max_compression_ratio``
    times (see :mod:`glide_jax.hub.checkpoint_zip`). Refusals raise
    :class:`CheckpointFormatError` (a ``ValueError``) naming the file and the tensor
    or member at fault.
    """
    limits = dict(max_member_bytes=max_member_bytes, max_total_bytes=max_total_bytes,
                  max_pickle_bytes=max_pickle_bytes, max_compression_ratio=max_compression_ratio)
    with _planned(path, limits) as (archive, plans, byteorder):
        total = sum(plan.nbytes for plan in plans.values())
        if total > archive.budget:
            raise archive.error(f"its tensors add up to {format_bytes(total)}, over the "
                                f"{format_bytes(archive.budget)} budget (max_total_bytes, or max_compression_ratio "
                                "times the file size)")
        return _build_tensors(plans, archive, byteorder)


def read_manifest(path) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of a ``.pt`` state dict, every tensor checked against its storage, no data read.

    The same checks as :func:`load_state_dict` (with its default limits) short of
    decompressing the storages: what a downloaded checkpoint is verified with before
    it takes its final name.
    """
    limits = dict(max_member_bytes=DEFAULT_MAX_MEMBER_BYTES, max_total_bytes=DEFAULT_MAX_TOTAL_BYTES,
                  max_pickle_bytes=DEFAULT_MAX_PICKLE_BYTES, max_compression_ratio=DEFAULT_MAX_COMPRESSION_RATIO)
    with _planned(path, limits) as (_, plans, _):
        return {name: (plan.size, np.dtype(plan.storage.dtype)) for name, plan in plans.items()}


@contextlib.contextmanager
def _planned(path, limits: Dict[str, int]) -> Iterator[Tuple[CheckpointZip, Dict[str, _TensorPlan], str]]:
    """The open archive, every tensor's checked plan and the byte order; nothing decompressed but the pickle."""
    check_limits(limits)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_regular_file(path, "checkpoint")  # before anything opens it: a FIFO would hang, /dev/zero never ends
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path} is not a zip-format PyTorch checkpoint (a damaged or incomplete download, or a legacy "
            "pre-1.6 file, which needs `pip install glide-jax[torch]` and the torch loader)"
        )
    with CheckpointZip.open(path, limits) as archive:
        root = _find_root(archive)
        records = _load_records(archive, root)
        byteorder = _read_byteorder(archive, root)
        yield archive, {name: _plan_tensor(record, name, archive) for name, record in records.items()}, byteorder


def load_state_dict_with_torch(path) -> Dict[str, np.ndarray]:
    """The same through torch itself (optional extra), with ``weights_only=True``."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("torch is not installed: `pip install glide-jax[torch]`, or use load_state_dict") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
