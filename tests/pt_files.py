"""Small ``.pt`` files in PyTorch's zip format, written without torch, for the reader's tests.

The layout follows ``torch.save``: ``<root>/data.pkl`` is a protocol-2 pickle of an
``OrderedDict`` whose values are ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, hooks)`` calls, each storage a persistent id
``('storage', torch.<Type>Storage, key, 'cpu', numel)``; ``<root>/data/<key>`` holds
the storage's raw bytes and ``<root>/version`` the format version. The pickle is
emitted opcode by opcode with the memo puts and gets CPython's pickler writes, and
ends with the ``_metadata`` attribute a real ``state_dict()`` carries, so the reader
sees the same opcodes as for a released checkpoint. Offsets, sizes, strides and
numels are written as given, hostile values included, and :func:`reference_tensor`
computes what a tensor should read by plain index arithmetic.

:meth:`PtFile.legacy_bytes` writes the same state dict in torch's legacy
(pre-1.6) format instead: pickles of the magic number, the protocol version and
the system info, the main pickle with six-field persistent ids
``('storage', type, key, 'cpu', numel, view)``, a pickle of the storage keys,
then each storage as a little-endian int64 element count and its little-endian
bytes, in key order. Every field can be overridden to make a hostile file.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import struct
import warnings
import zipfile
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np

STORAGE_TYPES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
LEGACY_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """One state-dict entry: a view of storage ``key``; fields may hold any picklable value."""

    name: str
    key: str
    offset: object
    size: object
    stride: object


@dataclasses.dataclass
class PtFile:
    storages: Dict[str, np.ndarray]  # 1-D arrays, one per storage key
    tensors: List[TensorRef]
    numels: Dict[str, object] = dataclasses.field(default_factory=dict)  # declared numel overrides
    type_names: Dict[str, str] = dataclasses.field(default_factory=dict)  # storage type name overrides
    root: str = "archive"
    byteorder: Optional[str] = None  # None writes no byteorder record (little-endian, as before torch 2.1)
    compression: int = zipfile.ZIP_STORED
    # legacy format only: tensor name -> the view metadata (view key, offset, numel) of its persistent id
    legacy_views: Dict[str, object] = dataclasses.field(default_factory=dict)

    def replace(self, **changes) -> "PtFile":
        return dataclasses.replace(self, **changes)

    def pickle_bytes(self, legacy: bool = False) -> bytes:
        writer = _PickleWriter()
        writer.new_ordered_dict()
        writer.raw(b"(")
        for tensor in self.tensors:
            writer.value(tensor.name)
            storage = self.storages.get(tensor.key)
            dtype = storage.dtype if storage is not None else np.dtype(np.float32)
            type_name = self.type_names.get(tensor.key, STORAGE_TYPES[dtype])
            numel = self.numels.get(tensor.key, storage.size if storage is not None else 0)
            writer.global_("torch._utils", "_rebuild_tensor_v2")
            writer.raw(b"(")
            writer.raw(b"(")
            writer.value("storage")
            writer.global_("torch", type_name)
            writer.value(tensor.key)
            writer.value("cpu")
            writer.value(numel)
            if legacy:
                writer.value(self.legacy_views.get(tensor.name))
            writer.raw(b"t")
            writer.put()
            writer.raw(b"Q")
            for field in (tensor.offset, tensor.size, tensor.stride, False):
                writer.value(field)
            writer.new_ordered_dict()
            writer.raw(b"t")
            writer.put()
            writer.raw(b"R")
            writer.put()
        writer.raw(b"u")
        # state_dict()'s _metadata attribute, set through BUILD as torch's pickle does
        writer.raw(b"}")
        writer.put()
        writer.value("_metadata")
        writer.new_ordered_dict()
        writer.value("")
        writer.raw(b"}")
        writer.put()
        writer.value("version")
        writer.value(1)
        writer.raw(b"ss")
        writer.raw(b"s")
        writer.raw(b"b.")
        return bytes(writer.out)

    def storage_bytes(self, key: str) -> bytes:
        storage = self.storages[key]
        order = ">" if self.byteorder == "big" else "<"
        raw = storage.view(f"u{storage.dtype.itemsize}").astype(f"{order}u{storage.dtype.itemsize}")
        return raw.tobytes()

    def legacy_bytes(self, *, magic=None, version=LEGACY_PROTOCOL_VERSION, sys_info=None, keys=None,
                     counts: Optional[Dict[str, object]] = None) -> bytes:
        """The file ``torch.save(..., _use_new_zipfile_serialization=False)`` writes; ``keys`` (the storage-key
        list, default: the storages used, sorted) and ``counts`` (the recorded element counts, default: true)
        may lie."""
        if keys is None:  # torch lists the storages the pickle referred to, sorted as strings
            keys = sorted({tensor.key for tensor in self.tensors} & set(self.storages))
        counts = counts or {}
        out = bytearray()
        for value in (LEGACY_MAGIC if magic is None else magic, version,
                      LEGACY_SYS_INFO if sys_info is None else sys_info):
            out += pickle.dumps(value, protocol=2)
        out += self.pickle_bytes(legacy=True)
        out += pickle.dumps(keys, protocol=2)
        for key in keys:
            if key not in self.storages:
                continue
            storage = self.storages[key]
            out += struct.pack("<q", counts.get(key, storage.size))
            out += storage.view(f"u{storage.dtype.itemsize}").astype(f"<u{storage.dtype.itemsize}").tobytes()
        return bytes(out)

    def members(self) -> List[Tuple[str, bytes]]:
        members = [(f"{self.root}/data.pkl", self.pickle_bytes())]
        if self.byteorder is not None:
            members.append((f"{self.root}/byteorder", self.byteorder.encode()))
        members += [(f"{self.root}/data/{key}", self.storage_bytes(key)) for key in self.storages]
        members.append((f"{self.root}/version", b"3\n"))
        return members

    def raw_members(self) -> List["RawMember"]:
        return [RawMember.of(name, data, self.compression) for name, data in self.members()]

    def zip_bytes(self, members: Optional[Sequence[Tuple[str, bytes]]] = None) -> bytes:
        return zip_members(self.members() if members is None else members, self.compression)

    def expected(self) -> Dict[str, np.ndarray]:
        return {t.name: reference_tensor(self.storages[t.key], t.offset, t.size, t.stride) for t in self.tensors}


def zip_members(members: Sequence[Tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip of the given members in order (duplicate names are written as given)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2022, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class RawMember:
    """A zip member as bytes on disk, with the sizes and CRC its headers declare (true ones unless overridden)."""

    name: str
    stored: bytes  # the member's bytes as written (raw deflate for ZIP_DEFLATED)
    method: int
    crc: int
    file_size: int
    compress_size: int

    @classmethod
    def of(cls, name: str, payload: bytes, method: int = zipfile.ZIP_STORED) -> "RawMember":
        stored = payload if method == zipfile.ZIP_STORED else raw_deflate(payload)
        return cls(name, stored, method, zlib.crc32(payload), len(payload), len(stored))

    def replace(self, **changes) -> "RawMember":
        return dataclasses.replace(self, **changes)


def raw_deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(payload) + compressor.flush()


def deflated_zeros(total_bytes: int, block_bytes: int = 16 << 20) -> Tuple[bytes, int]:
    """A raw deflate stream of ``total_bytes`` zeros (a multiple of ``block_bytes``) and its CRC-32, built
    from one compressed block repeated: a full flush makes every block's output identical, so a
    1 GiB member costs one 16 MiB compression instead of 64."""
    if total_bytes % block_bytes:
        raise ValueError(f"{total_bytes} is not a multiple of the {block_bytes}-byte block")
    zeros = bytes(block_bytes)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(total_bytes // block_bytes):
        crc = zlib.crc32(zeros, crc)
    return block * (total_bytes // block_bytes) + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


def raw_zip(members: Sequence[RawMember]) -> bytes:
    """A zip written field by field, so headers can declare sizes and CRCs the data does not have."""
    out = bytearray()
    directory = bytearray()
    for member in members:
        name = member.name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, member.method, 0, 0x5421, member.crc,
                           member.compress_size & 0xFFFFFFFF, member.file_size & 0xFFFFFFFF, len(name), 0)
        out += name + member.stored
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, member.method, 0, 0x5421, member.crc,
                                 member.compress_size & 0xFFFFFFFF, member.file_size & 0xFFFFFFFF, len(name),
                                 0, 0, 0, 0, 0, offset)
        directory += name
    start = len(out)
    out += directory
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), start, 0)
    return bytes(out)


def reference_nbytes(storage: np.ndarray, offset, size, stride) -> Optional[int]:
    """The bytes of the tensor torch would build, or None when the view is invalid or reads out of bounds."""
    if type(offset) is not int or not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        return None
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(type(v) is int for v in size + stride):
        return None
    if offset < 0 or any(v < 0 for v in size + stride):
        return None
    count = math.prod(size)
    if count == 0:
        return 0 if offset <= storage.size else None
    if offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
        return None
    return count * storage.dtype.itemsize


def reference_tensor(storage: np.ndarray, offset, size, stride) -> Optional[np.ndarray]:
    """The tensor torch would build, by index arithmetic; None when the view is invalid or reads out of bounds."""
    if reference_nbytes(storage, offset, size, stride) is None:
        return None
    size, stride = tuple(size), tuple(stride)
    if math.prod(size) == 0:
        return np.zeros(size, storage.dtype)
    index = np.full(size, offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[axis] = n
        index = index + (np.arange(n, dtype=np.int64) * (s if n > 1 else 0)).reshape(shape)
    return storage[index]


class _PickleWriter:
    """Protocol-2 opcodes with the memo bookkeeping CPython's pickler does."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0
        self.globals: Dict[Tuple[str, str], int] = {}

    def raw(self, data: bytes) -> None:
        self.out += data

    def put(self) -> int:
        index = self.memo
        self.memo += 1
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)
        return index

    def get(self, index: int) -> None:
        self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)

    def global_(self, module: str, name: str) -> None:
        if (module, name) in self.globals:
            self.get(self.globals[(module, name)])
            return
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.globals[(module, name)] = self.put()

    def new_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out += b")R"
        self.put()

    def value(self, value) -> None:
        if value is None:
            self.out += b"N"
        elif value is True or value is False:
            self.out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            if 0 <= value < 256:
                self.out += b"K" + bytes([value])
            elif 0 <= value < 65536:
                self.out += b"M" + struct.pack("<H", value)
            elif -(2 ** 31) <= value < 2 ** 31:
                self.out += b"J" + struct.pack("<i", value)
            else:
                encoded = pickle.encode_long(value)
                self.out += b"\x8a" + bytes([len(encoded)]) + encoded
        elif isinstance(value, float):
            self.out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str):
            encoded = value.encode("utf-8", "surrogatepass")
            self.out += b"X" + struct.pack("<I", len(encoded)) + encoded
            self.put()
        elif isinstance(value, tuple):
            if not value:
                self.out += b")"
                return
            if len(value) > 3:
                self.out += b"("
            for item in value:
                self.value(item)
            self.out += b"t" if len(value) > 3 else b"\x85\x86\x87"[len(value) - 1:len(value)]
            self.put()
        elif isinstance(value, list):
            self.out += b"]"
            self.put()
            self.out += b"("
            for item in value:
                self.value(item)
            self.out += b"e"
        else:
            raise TypeError(f"cannot write {type(value).__name__} into the test pickle")


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` is per address space, so unlike ``ru_maxrss`` (which Linux
    carries across exec) it does not start at the peak of whichever process spawned this one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_file() -> PtFile:
    """float32, float16, int64, bfloat16 and bool tensors; a storage shared by two views at different offsets;
    a non-contiguous (transposed) view; a 0-d tensor and an empty one."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(12).astype(np.float32)
    shared = rng.standard_normal(20).astype(np.float32)
    half = rng.standard_normal(6).astype(np.float16)
    longs = np.array([7, -3, 2 ** 40, -(2 ** 62)], np.int64)
    brain = rng.standard_normal(5).astype(ml_dtypes.bfloat16)
    flags = np.array([True, False, True], np.bool_)
    storages = {"0": weight, "1": shared, "2": half, "3": longs, "4": brain, "5": flags}
    tensors = [
        TensorRef("block.weight", "0", 0, (3, 4), (4, 1)),
        TensorRef("block.weight_t", "0", 0, (4, 3), (1, 4)),
        TensorRef("shared.first", "1", 0, (2, 5), (5, 1)),
        TensorRef("shared.second", "1", 10, (10,), (1,)),
        TensorRef("half", "2", 0, (6,), (1,)),
        TensorRef("half.every_other", "2", 1, (2, 1), (2, 7)),
        TensorRef("steps", "3", 0, (4,), (1,)),
        TensorRef("scalar", "3", 2, (), ()),
        TensorRef("bf16", "4", 0, (5,), (1,)),
        TensorRef("flags", "5", 0, (3,), (1,)),
        TensorRef("empty", "1", 20, (0, 3), (3, 1)),
    ]
    return PtFile(storages, tensors)


def simple_file(elements: int = 4) -> PtFile:
    """One float32 tensor over its own storage."""
    storage = np.arange(1, elements + 1, dtype=np.float32)
    return PtFile({"0": storage}, [TensorRef("weight", "0", 0, (elements,), (1,))])
