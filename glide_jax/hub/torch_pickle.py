"""The part of a ``torch.save`` state dict both of torch's file formats share: the pickle and its tensors.

Whether the file is a zip archive (torch >= 1.6) or the older stream of
pickles (``torch_legacy``), its main pickle is the same: an ``OrderedDict`` of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls
whose storages are persistent ids. Only the persistent ids and where the
storage bytes live differ, so each format subclasses :class:`StateDictUnpickler`
for its ids and hands back :class:`StorageRef` records; the checks of a tensor
against its storage (:func:`plan_tensor`) and the copy out of the storage bytes
(:func:`build_tensor`) are written once, here.

The unpickler resolves only the handful of globals a state dict needs;
anything else (a callable a malicious file could name) is refused, so reading a
checkpoint cannot execute code.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from typing import Dict, NamedTuple, Tuple

import ml_dtypes
import numpy as np

from glide_jax.errors import InputError
from glide_jax.hub.checkpoint_zip import CheckpointFormatError, clip, describe, format_bytes

MAX_NDIM = 32
MAX_DIM = 1 << 48
MAX_STORAGE_KEY_CHARS = 256

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


class StorageType(NamedTuple):
    """What ``torch.FloatStorage`` etc. unpickle to; immutable, so a pickle's BUILD opcode cannot retarget it."""

    name: str
    dtype: np.dtype


STORAGE_TYPES = {name: StorageType(name, np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()}


def is_storage_type(value) -> bool:
    """True only for the reader's own storage-type records (not a look-alike tuple built by the pickle)."""
    return isinstance(value, StorageType) and STORAGE_TYPES.get(value.name) is value


class StorageRef(NamedTuple):
    """A storage a tensor views: ``numel`` elements of ``dtype``; ``location`` says where the format keeps them."""

    key: str
    dtype: np.dtype
    numel: int
    location: object


class TensorRecord(NamedTuple):
    """The arguments of ``_rebuild_tensor_v2``, kept unchecked until the tensor's state-dict key is known."""

    storage: object
    offset: object
    size: object
    stride: object


def _tensor_record(*args) -> TensorRecord:
    """``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``, unchecked yet."""
    if not 4 <= len(args) <= 7:
        raise InputError(f"_rebuild_tensor_v2 takes 4 to 7 arguments, got {len(args)}")
    return TensorRecord(*args[:4])


class StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict's structure; subclasses turn the format's persistent ids into ``StorageRef``s.

    ``source`` is the open checkpoint: it has ``path`` and ``error(message)``.
    """

    def __init__(self, data: bytes, source):
        super().__init__(io.BytesIO(data))
        self.source = source
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
        if module == "torch" and name in STORAGE_TYPES:
            return STORAGE_TYPES[name]
        raise RefusedGlobalError(f"{self.source.path}: refusing to load {clip(module, 100)}.{clip(name, 100)}: "
                                 "not part of a plain tensor state dict")

    def persistent_load(self, pid):  # overridden by each format
        raise self.source.error(f"unexpected persistent id ({describe(pid)})")


class PlainUnpickler(pickle.Unpickler):
    """For the format's small bookkeeping pickles: plain values only, no global and no persistent id."""

    def __init__(self, data: bytes, source):
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module, name):
        raise RefusedGlobalError(f"{self.source.path}: refusing to load {clip(module, 100)}.{clip(name, 100)}: "
                                 "this pickle holds plain values only")

    def persistent_load(self, pid):
        raise self.source.error(f"unexpected persistent id ({describe(pid)}) in a pickle of plain values")


def unpickle(unpickler: pickle.Unpickler, what: str):
    """Run an unpickler over already-checked bytes; any failure becomes a format error naming ``what``."""
    try:
        return unpickler.load()
    except (CheckpointFormatError, MemoryError):
        raise
    except Exception as e:  # the unpickler signals malformed input with many exception types
        raise unpickler.source.error(f"{what} is malformed ({type(e).__name__}: {clip(str(e))})") from e


def select_state_dict(obj, source) -> Dict[str, TensorRecord]:
    """The ``{name: tensor}`` mapping inside an unpickled object (a bare state dict or ``{"state_dict": ...}``)."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise source.error(f"does not hold a state dict (got {describe(obj)})")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise source.error(f"state dict key {describe(key)} is not a string")
        if not isinstance(value, TensorRecord):
            raise source.error(f"state dict entry {describe(key)} holds {describe(value)}, not a tensor")
    return obj


class TensorPlan(NamedTuple):
    storage: StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    nbytes: int


def plan_tensor(record: TensorRecord, name: str, source) -> TensorPlan:
    """Check one tensor against its storage, in Python integers so nothing can overflow."""
    storage = record.storage
    if not isinstance(storage, StorageRef):
        raise source.error(f"tensor {describe(name)}: its storage is {describe(storage)}, "
                           "not a storage of the checkpoint")

    def refuse(problem: str) -> CheckpointFormatError:
        return source.error(f"tensor {describe(name)} (storage {storage.key!r}): {problem}")

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
    return TensorPlan(storage, offset, size, stride, count * storage.dtype.itemsize)


def check_tensor_budget(plans: Dict[str, TensorPlan], source, budget: int) -> None:
    """Refuse a state dict whose tensors would take more than ``budget`` bytes once copied out."""
    total = sum(plan.nbytes for plan in plans.values())
    if total > budget:
        raise source.error(f"its tensors add up to {format_bytes(total)}, over the {format_bytes(budget)} budget "
                           "(max_total_bytes, or max_compression_ratio times the file size)")


def _describe_all(values) -> str:
    return "(" + ", ".join(describe(value) for value in values) + ")"


def build_tensor(plan: TensorPlan, raw: np.ndarray) -> np.ndarray:
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
