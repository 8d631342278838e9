"""Read PyTorch ``.pt`` state dicts without torch, without running pickled code, and without trusting the file.

A modern ``torch.save`` file is a zip archive: ``<root>/data.pkl`` pickles the
structure (an ``OrderedDict`` of tensors rebuilt by ``torch._utils._rebuild_tensor_v2``)
and each tensor storage is a raw blob ``<root>/data/<key>`` (little-endian unless
``<root>/byteorder`` says ``big``). The unpickler here resolves only the handful
of globals a state dict needs; anything else (arbitrary callables a malicious
file could name) is refused, so loading a checkpoint cannot execute code.

A checkpoint is untrusted input, so every number in it is checked before it is
used: member sizes against limits and against the file's own length before
anything is decompressed, memo indices in the pickle before it is unpickled
(CPython sizes its memo table from the largest index), and each tensor's
offset, sizes and strides against its storage before a single element is read.
Everything the reader refuses raises :class:`CheckpointFormatError` naming the
file (and the tensor or member at fault).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import ml_dtypes
import numpy as np

MiB = 1 << 20
GiB = 1 << 30
# The largest released GLIDE checkpoint (upsample.pt) holds about 1.6 GB of float32 in one zip.
DEFAULT_MAX_MEMBER_BYTES = 4 * GiB
DEFAULT_MAX_TOTAL_BYTES = 8 * GiB
DEFAULT_MAX_PICKLE_BYTES = 64 * MiB
# torch.save stores members uncompressed (ratio 1); deflated float weights reach about 1.1.
DEFAULT_MAX_COMPRESSION_RATIO = 100
# Amounts this small are never refused for their ratio: they cannot hurt, and tiny files legitimately expand.
RATIO_EXEMPT_BYTES = 16 * MiB
MAX_NDIM = 32
MAX_DIM = 1 << 48
_CHUNK_BYTES = 16 * MiB
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


class CheckpointFormatError(ValueError):
    """A ``.pt`` file the reader refuses: malformed, truncated, hostile, or over a size limit."""


class RefusedGlobalError(CheckpointFormatError, pickle.UnpicklingError):
    """The pickle names a callable outside the plain-state-dict set: honouring it could run code."""


class _StorageType(NamedTuple):
    """What ``torch.FloatStorage`` etc. unpickle to; immutable, so a pickle's BUILD opcode cannot retarget it."""

    name: str
    dtype: np.dtype


_STORAGE_TYPES = {name: _StorageType(name, np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()}


class _Storage(NamedTuple):
    key: str
    dtype: np.dtype  # the element type the tensors are returned as
    raw: np.ndarray  # 1-D, one unsigned integer per element in the file's byte order


class _TensorRecord(NamedTuple):
    """The arguments of ``_rebuild_tensor_v2``, kept unchecked until the tensor's state-dict key is known."""

    storage: object
    offset: object
    size: object
    stride: object


def _describe(value) -> str:
    """A short, safe description of an untrusted value for error messages (no unbounded repr)."""
    if isinstance(value, (int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    return f"a {type(value).__name__}"


def _clip(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _format_bytes(count: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


class _Archive:
    """One open zip and the byte budget every decompression is charged against."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, limits: Dict[str, int]):
        self.path = path
        self.zip = archive
        self.limits = limits
        self.file_bytes = path.stat().st_size
        self.budget = min(limits["max_total_bytes"],
                          max(RATIO_EXEMPT_BYTES, limits["max_compression_ratio"] * self.file_bytes))
        self.decompressed = 0
        infos = archive.infolist()
        counts = collections.Counter(info.filename for info in infos)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise self.error(f"duplicate member names {duplicates[:5]}; a zip written by torch.save has none")
        self.members = {info.filename: info for info in infos}

    def error(self, message: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{self.path}: {message}")

    def read(self, name: str, what: str, max_bytes: int, expected_bytes: int | None = None) -> bytearray:
        """Decompress one member in bounded chunks after checking its declared sizes; never more than declared."""
        info = self.members.get(name)
        if info is None:
            raise self.error(f"{what}: the archive has no member {name!r}")
        size, compressed = info.file_size, info.compress_size
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"member {name!r} uses zip compression method {info.compress_type}; "
                             "only stored (as torch.save writes) and deflated members are read")
        if info.flag_bits & 0x1:
            raise self.error(f"member {name!r} is encrypted")
        if expected_bytes is not None and size != expected_bytes:
            raise self.error(f"{what}: member {name!r} holds {size} bytes, the pickle declares {expected_bytes}")
        if size > max_bytes:
            raise self.error(f"{what}: member {name!r} declares {_format_bytes(size)}, over the "
                             f"{_format_bytes(max_bytes)} limit")
        if info.header_offset + compressed > self.file_bytes:
            raise self.error(f"member {name!r} declares {compressed} compressed bytes at offset "
                             f"{info.header_offset}, past the end of the {self.file_bytes}-byte file")
        if info.compress_type == zipfile.ZIP_STORED and size != compressed:
            raise self.error(f"stored member {name!r} declares {size} bytes but {compressed} stored bytes")
        ratio_limit = self.limits["max_compression_ratio"]
        if size > RATIO_EXEMPT_BYTES and size > ratio_limit * compressed:
            raise self.error(f"member {name!r} declares {_format_bytes(size)} from {_format_bytes(compressed)} "
                             f"compressed (ratio {size / max(compressed, 1):.0f} > max_compression_ratio={ratio_limit})")
        if self.decompressed + size > self.budget:
            raise self.error(f"{what}: decompressing member {name!r} ({_format_bytes(size)}) would bring the total "
                             f"to {_format_bytes(self.decompressed + size)}, over the {_format_bytes(self.budget)} "
                             "budget (max_total_bytes, or max_compression_ratio times the file size)")
        self.decompressed += size
        buffer = bytearray(size)
        filled = 0
        with self.zip.open(info) as stream, memoryview(buffer) as view:
            while filled < size:
                chunk = stream.read(min(_CHUNK_BYTES, size - filled))
                if not chunk:
                    raise self.error(f"{what}: member {name!r} ends after {filled} of its {size} declared bytes")
                view[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
        return buffer


def _check_pickle_opcodes(data: bytes, archive: _Archive) -> None:
    """Walk the pickle without executing it; refuse memo indices no honest pickler writes.

    CPython's unpickler grows its memo table to twice the largest index it is asked
    to store at, so an 8-byte pickle with ``LONG_BINPUT 2**27`` costs 2 GB.
    A pickler numbers memo entries consecutively, so an index is always below the
    number of opcodes seen so far.
    """
    count = 0
    opcodes = pickletools.genops(io.BytesIO(data))
    while True:
        try:
            opcode, argument, position = next(opcodes)
        except StopIteration:
            return
        except Exception as e:  # genops reports every malformation as some exception
            raise archive.error(f"the pickle is malformed ({type(e).__name__}: {_clip(str(e))})") from e
        count += 1
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (isinstance(argument, int) and 0 <= argument < count):
            raise archive.error(f"memo index {_describe(argument)} at byte {position} of the pickle, "
                                f"after only {count} opcodes")


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive, root: str, byteorder: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._byteorder = byteorder
        self._storages: Dict[str, _Storage] = {}
        # Fresh functions per load: a BUILD opcode aimed at one of them can only touch this load's copy.
        self._globals = {
            ("collections", "OrderedDict"): lambda *args: collections.OrderedDict(*args),
            ("torch._utils", "_rebuild_tensor_v2"): lambda *args: self._rebuild_tensor(*args),
            ("torch._utils", "_rebuild_parameter"): lambda data, *_ignored: data,
            ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_ignored: data,
        }

    def find_class(self, module, name):
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise RefusedGlobalError(f"{self._archive.path}: refusing to load {module}.{name}: "
                                 "not part of a plain tensor state dict")

    @staticmethod
    def _rebuild_tensor(*args):
        if not 4 <= len(args) <= 7:
            raise ValueError(f"_rebuild_tensor_v2 takes 4 to 7 arguments, got {len(args)}")
        return _TensorRecord(*args[:4])

    def persistent_load(self, pid):
        archive = self._archive
        if not (type(pid) is tuple and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise archive.error(f"unsupported persistent id ({_describe(pid)}); expected "
                                "('storage', type, key, location, numel)")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(key, str) and 0 < len(key) <= _MAX_STORAGE_KEY_CHARS):
            raise archive.error(f"storage key {_describe(key)} is not a short string")
        if not (isinstance(storage_type, _StorageType) and _STORAGE_TYPES.get(storage_type.name) is storage_type):
            raise archive.error(f"storage {key!r} has unknown storage type {_describe(storage_type)}")
        if type(numel) is not int or numel < 0:
            raise archive.error(f"storage {key!r} declares {_describe(numel)} elements")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != storage_type.dtype or cached.raw.size != numel:
                raise archive.error(f"storage {key!r} is declared twice with different types or sizes")
            return cached
        itemsize = storage_type.dtype.itemsize
        raw_dtype = np.dtype(f"{'<' if self._byteorder == 'little' else '>'}u{itemsize}")
        data = archive.read(f"{self._root}data/{key}", f"storage {key!r}",
                            archive.limits["max_member_bytes"], expected_bytes=numel * itemsize)
        storage = _Storage(key, storage_type.dtype, np.frombuffer(data, dtype=raw_dtype))
        self._storages[key] = storage
        return storage


class _TensorPlan(NamedTuple):
    storage: _Storage
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    nbytes: int


def _plan_tensor(record: _TensorRecord, name: str, archive: _Archive) -> _TensorPlan:
    """Check one tensor against its storage, in Python integers so nothing can overflow."""
    storage = record.storage
    if not isinstance(storage, _Storage):
        raise archive.error(f"tensor {name!r}: its storage is {_describe(storage)}, not a storage of the archive")

    def refuse(problem: str) -> CheckpointFormatError:
        return archive.error(f"tensor {name!r} (storage {storage.key!r}): {problem}")

    def integers(value, what: str) -> Tuple[int, ...]:
        if not isinstance(value, (tuple, list)):
            raise refuse(f"{what} is {_describe(value)}, not a tuple of integers")
        if len(value) > MAX_NDIM:
            raise refuse(f"{what} has {len(value)} dimensions, more than {MAX_NDIM}")
        if not all(type(item) is int for item in value):
            raise refuse(f"{what} {tuple(_describe(item) for item in value)} holds a non-integer")
        return tuple(value)

    offset = record.offset
    if type(offset) is not int or offset < 0:
        raise refuse(f"storage offset {_describe(offset)} is not a non-negative integer")
    size, stride = integers(record.size, "size"), integers(record.stride, "stride")
    if len(size) != len(stride):
        raise refuse(f"size has {len(size)} dimensions but stride has {len(stride)}")
    if any(not 0 <= dim <= MAX_DIM for dim in size):
        raise refuse(f"size {tuple(map(_describe, size))} has a negative dimension or one above {MAX_DIM}")
    if any(step < 0 for step in stride):
        raise refuse(f"stride {tuple(map(_describe, stride))} has a negative step")
    numel = storage.raw.size
    count = math.prod(size)
    if count == 0:
        if offset > numel:
            raise refuse(f"storage offset {offset} is past the end of a storage of {numel} elements")
    else:
        last = offset + sum((dim - 1) * step for dim, step in zip(size, stride))
        if last >= numel:
            raise refuse(f"size {size}, stride {_describe_all(stride)} and offset {_describe(offset)} reach element "
                         f"{_describe(last)} of a storage of {numel} elements")
    return _TensorPlan(storage, offset, size, stride, count * storage.dtype.itemsize)


def _describe_all(values) -> str:
    return "(" + ", ".join(_describe(value) for value in values) + ")"


def _build_tensor(plan: _TensorPlan) -> np.ndarray:
    """Copy a bounds-checked view out of the storage, in native byte order."""
    storage = plan.storage
    itemsize = storage.dtype.itemsize
    native = np.dtype(f"=u{itemsize}")
    out = np.empty(plan.size, dtype=native)
    if out.size:
        # Dimensions of length 1 never step, so their (possibly huge) strides are dropped rather than multiplied.
        byte_strides = tuple(step * itemsize if dim > 1 else 0 for dim, step in zip(plan.size, plan.stride))
        view = np.lib.stride_tricks.as_strided(storage.raw[plan.offset:], shape=plan.size, strides=byte_strides,
                                               writeable=False)
        np.copyto(out, view)
    if storage.dtype == np.bool_:
        return out != 0
    return out.view(storage.dtype)


def _select_state_dict(obj, archive: _Archive) -> Dict[str, _TensorRecord]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise archive.error(f"does not hold a state dict (got {_describe(obj)})")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise archive.error(f"state dict key {_describe(key)} is not a string")
        if not isinstance(value, _TensorRecord):
            raise archive.error(f"state dict entry {key!r} holds {_describe(value)}, not a tensor")
    return obj


def _find_root(archive: _Archive) -> str:
    pickles = [name for name in archive.members if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise archive.error(f"expected one data.pkl in the archive, found {pickles[:5]}")
    return pickles[0][: -len("data.pkl")]


def _read_byteorder(archive: _Archive, root: str) -> str:
    name = f"{root}byteorder"
    if name not in archive.members:
        return "little"
    value = bytes(archive.read(name, "byteorder record", 16))
    if value not in (b"little", b"big"):
        raise archive.error(f"byteorder record is {_describe(value.decode('latin-1'))}, not 'little' or 'big'")
    return value.decode()


def _load_records(archive: _Archive) -> Dict[str, _TensorRecord]:
    root = _find_root(archive)
    byteorder = _read_byteorder(archive, root)
    data = bytes(archive.read(f"{root}data.pkl", "the pickle", archive.limits["max_pickle_bytes"]))
    _check_pickle_opcodes(data, archive)
    return _select_state_dict(_SafeUnpickler(data, archive, root, byteorder).load(), archive)


def _check_limits(limits: Dict[str, int]) -> None:
    for name, value in limits.items():
        if type(value) is not int or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def load_state_dict(path, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
                    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO) -> Dict[str, np.ndarray]:
    """Load a ``torch.save``-d state dict as ``{name: numpy array}``, never executing pickled code.

    ``max_member_bytes`` bounds any one decompressed member, ``max_pickle_bytes``
    the pickle, and ``max_total_bytes`` both everything decompressed and the arrays
    built from it (views of one storage each cost a copy). Beyond ``RATIO_EXEMPT_BYTES``,
    neither a member nor the file as a whole may expand more than
    ``max_compression_ratio`` times. Refusals raise :class:`CheckpointFormatError`.
    """
    limits = dict(max_member_bytes=max_member_bytes, max_total_bytes=max_total_bytes,
                  max_pickle_bytes=max_pickle_bytes, max_compression_ratio=max_compression_ratio)
    _check_limits(limits)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path} is not a zip-format PyTorch checkpoint; legacy (pre-1.6) files need "
            "`pip install glide-jax[torch]` and the torch loader (torch.load(weights_only=True))"
        )
    try:
        with zipfile.ZipFile(path) as opened:
            archive = _Archive(path, opened, limits)
            records = _load_records(archive)
    except (CheckpointFormatError, MemoryError):
        raise
    except Exception as e:  # zipfile, zlib and the unpickler signal malformed input with many exception types
        raise CheckpointFormatError(f"{path}: unreadable checkpoint ({type(e).__name__}: {_clip(str(e))})") from e
    plans: List[Tuple[str, _TensorPlan]] = [(name, _plan_tensor(record, name, archive)) for name, record in records.items()]
    total = sum(plan.nbytes for _, plan in plans)
    if total > archive.budget:
        raise archive.error(f"its tensors add up to {_format_bytes(total)}, over the {_format_bytes(archive.budget)} "
                            "budget (max_total_bytes, or max_compression_ratio times the file size)")
    return {name: _build_tensor(plan) for name, plan in plans}


def load_state_dict_with_torch(path) -> Dict[str, np.ndarray]:
    """The same through torch itself (optional extra), with ``weights_only=True``."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("torch is not installed: `pip install glide-jax[torch]`, or use load_state_dict") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
