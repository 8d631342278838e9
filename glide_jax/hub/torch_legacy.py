"""Read torch's legacy checkpoint format (before 1.6, or ``_use_new_zipfile_serialization=False``), untrusted.

Some released weights predate torch's zip format, pytorch-fid's Inception
among them. A legacy file is one stream, with no index:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. a pickle of the format's protocol version, ``1001``;
3. a pickle of the writer's system information (a dict; nothing here needs it);
4. the main pickle, the state dict itself, each storage a persistent id
   ``('storage', torch.<Type>Storage, root key, location, numel, view)``, where
   ``view`` is ``None`` or ``(view key, element offset, element count)`` into the
   root storage (only very old writers produced views);
5. a pickle of the list of root storage keys, in the order their bytes follow;
6. for each key of that list, its element count as a little-endian int64, then
   its elements, little-endian whatever machine wrote them.

The same rules as the zip reader (:mod:`glide_jax.hub.torch_zip`) apply. Every
pickle is dry-run by :mod:`glide_jax.hub.pickle_check` before it is unpickled;
the bookkeeping pickles may hold plain values only and the main one only what
a state dict needs (:mod:`glide_jax.hub.torch_pickle`). All the pickles together
must end within ``max_pickle_bytes`` of the start; one storage may not exceed
``max_member_bytes``, nor the storages, or the tensors copied out of them, the
file's byte budget. Before a single element is read, every storage's recorded
count is checked against the pickle and the file's length, and every tensor
against its storage; then each storage the state dict uses is read once.
"""

from __future__ import annotations

import contextlib
import io
import pickletools
import struct
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from glide_jax.hub.checkpoint_zip import (CheckpointFormatError, byte_budget, check_limits, clip, describe,
                                          format_bytes)
from glide_jax.hub.pickle_check import check_pickle
from glide_jax.hub.torch_pickle import (MAX_STORAGE_KEY_CHARS, PlainUnpickler, StateDictUnpickler, StorageRef,
                                        TensorPlan, build_tensor, check_tensor_budget, is_storage_type, plan_tensor,
                                        select_state_dict, unpickle)

__all__ = ["MAGIC_NUMBER", "PROTOCOL_VERSION", "load_legacy_state_dict", "read_legacy_manifest"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_PICKLES = ("the magic-number pickle", "the protocol-version pickle", "the system-info pickle", "the main pickle",
            "the storage-key pickle")
_FIRST_READ_BYTES = 1 << 20  # the pickles of a state dict take a few hundred KiB at most
_COUNT = struct.Struct("<q")


class _LegacyFile:
    """An open legacy checkpoint: its path, limits and byte budget, and how it reports a refusal."""

    def __init__(self, path: Path, stream: BinaryIO, limits: Dict[str, int]):
        self.path = path
        self.stream = stream
        self.limits = limits
        self.file_bytes = path.stat().st_size
        self.budget = byte_budget(limits, self.file_bytes)

    def error(self, message: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{self.path}: {message}")

    def read_at(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset``, already known to lie inside the file; a short read is an error."""
        self.stream.seek(offset)
        data = self.stream.read(size)
        if len(data) != size:
            raise self.error(f"{what}: read {len(data)} of {size} bytes at offset {offset} (the file changed?)")
        return data


def _is_word(value, word: str) -> bool:
    """``value`` is ``word`` as text, or as ASCII bytes (what files pickled under Python 2 hold)."""
    return (type(value) is str and value == word) or (type(value) is bytes and value == word.encode())


class _LegacyUnpickler(StateDictUnpickler):
    """Storages are ``('storage', type, root key, location, numel, view)``; ``location`` of each returned
    ``StorageRef`` is ``(root key, element offset into the root)``."""

    def __init__(self, data: bytes, source: _LegacyFile):
        super().__init__(data, source)
        self.roots: Dict[str, StorageRef] = {}
        self.views: Dict[str, StorageRef] = {}

    def _key(self, key, what: str) -> str:
        if not (isinstance(key, str) and 0 < len(key) <= MAX_STORAGE_KEY_CHARS):
            raise self.source.error(f"{what} {describe(key)} is not a short string")
        return key

    def persistent_load(self, pid):
        source = self.source
        if not (type(pid) is tuple and len(pid) == 6 and _is_word(pid[0], "storage")):
            raise source.error(f"unsupported persistent id ({describe(pid)}); expected "
                               "('storage', type, key, location, numel, view)")
        _, storage_type, key, _location, numel, view = pid
        key = self._key(key, "storage key")
        if not is_storage_type(storage_type):
            raise source.error(f"storage {key!r} has unknown storage type {describe(storage_type)}")
        if type(numel) is not int or numel < 0:
            raise source.error(f"storage {key!r} declares {describe(numel)} elements")
        nbytes = numel * storage_type.dtype.itemsize
        if nbytes > source.limits["max_member_bytes"]:
            raise source.error(f"storage {key!r} declares {format_bytes(nbytes)}, over the "
                               f"{format_bytes(source.limits['max_member_bytes'])} limit (max_member_bytes)")
        root = StorageRef(key, storage_type.dtype, numel, (key, 0))
        known = self.roots.setdefault(key, root)
        if known != root:
            raise source.error(f"storage {key!r} is declared twice with different types or sizes")
        if key in self.views:
            raise source.error(f"key {key!r} names both a storage and a view")
        if view is None:
            return root
        if not (type(view) is tuple and len(view) == 3):
            raise source.error(f"storage {key!r} has view metadata {describe(view)}, not (key, offset, size)")
        view_key, offset, count = self._key(view[0], "view key"), view[1], view[2]
        if not (type(offset) is int and type(count) is int and offset >= 0 and count >= 0
                and offset + count <= numel):
            raise source.error(f"view {view_key!r} of storage {key!r}: {describe(count)} elements from "
                               f"{describe(offset)} do not lie within its {numel} elements")
        ref = StorageRef(view_key, storage_type.dtype, count, (key, offset))
        if view_key in self.roots or self.views.setdefault(view_key, ref) != ref:
            raise source.error(f"view {view_key!r} is declared twice differently, or also names a storage")
        return ref


class _Pickles(NamedTuple):
    """The file's first bytes and the pickles found in them, in order; ``failure``: why fewer than five."""

    head: bytes
    spans: List[Tuple[int, int]]
    failure: Optional[CheckpointFormatError]

    def piece(self, index: int) -> bytes:
        if index >= len(self.spans):
            raise self.failure
        start, end = self.spans[index]
        return self.head[start:end]


def _find_pickles(head: bytes, source: _LegacyFile, complete: bool) -> Optional[_Pickles]:
    """The pickles in ``head``; None when one does not end there but reading further might end it."""
    stream = io.BytesIO(head)
    spans: List[Tuple[int, int]] = []
    start = 0
    for what in _PICKLES:
        stream.seek(start)
        try:
            for opcode, _argument, position in pickletools.genops(stream):
                if opcode.name == "STOP":
                    end = position + 1
        except Exception as e:  # genops reports every malformation, truncation included, as some exception
            if not complete:
                return None
            where = "the whole file" if len(head) == source.file_bytes else \
                f"max_pickle_bytes={source.limits['max_pickle_bytes']}"
            failure = source.error(f"{what} (from byte {start}) is malformed, or does not end within {where} "
                                   f"({type(e).__name__}: {clip(str(e))})")
            return _Pickles(head, spans, failure)
        spans.append((start, end))
        start = end
    return _Pickles(head, spans, None)


def _read_pickles(source: _LegacyFile) -> _Pickles:
    """The five pickles at the start of the file, read in growing pieces up to ``max_pickle_bytes``."""
    limit = min(source.file_bytes, source.limits["max_pickle_bytes"])
    want = min(limit, _FIRST_READ_BYTES)
    while True:
        found = _find_pickles(source.read_at(0, want, "the pickles"), source, complete=want >= limit)
        if found is not None:
            return found
        want = min(limit, want * 8)


def _plain(data: bytes, source: _LegacyFile, what: str):
    check_pickle(data, source)
    return unpickle(PlainUnpickler(data, source), what)


def _check_header(pickles: _Pickles, source: _LegacyFile) -> None:
    """The magic number, protocol version and system info, each checked before the next pickle is looked at."""
    magic = _plain(pickles.piece(0), source, _PICKLES[0])
    if type(magic) is not int or magic != MAGIC_NUMBER:
        raise source.error(f"is not a legacy-format PyTorch checkpoint: its first pickle holds {describe(magic)}, "
                           f"not torch's magic number {MAGIC_NUMBER:#x}")
    version = _plain(pickles.piece(1), source, _PICKLES[1])
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise source.error(f"legacy format protocol version {describe(version)}; only {PROTOCOL_VERSION} is read")
    if not isinstance(_plain(pickles.piece(2), source, _PICKLES[2]), dict):
        raise source.error("the system-info pickle does not hold a dict")


def _locate_storages(keys, roots: Dict[str, StorageRef], data_start: int, source: _LegacyFile) -> Dict[str, int]:
    """``{root key: file offset of its first element}``: every count checked against the pickle and the file."""
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise source.error(f"the storage-key pickle holds {describe(keys)}, not a list of strings")
    listed = set(keys)
    problems = []
    if len(listed) != len(keys):
        problems.append(f"it lists {len(keys) - len(listed)} key(s) twice")
    for what, names in (("declared by the main pickle but not listed", roots.keys() - listed),
                        ("listed but never declared by the main pickle", listed - roots.keys())):
        if names:
            problems.append(f"{len(names)} storage(s) {what} ({clip(', '.join(sorted(names)[:5]), 200)})")
    if problems:
        raise source.error("the storage-key list does not match the main pickle: " + "; ".join(problems))
    offsets: Dict[str, int] = {}
    offset, total = data_start, 0
    for key in keys:
        root = roots[key]
        if offset + _COUNT.size > source.file_bytes:
            raise source.error(f"storage {key!r}: the file ends at byte {source.file_bytes}, before its element "
                               f"count at byte {offset} (truncated)")
        (count,) = _COUNT.unpack(source.read_at(offset, _COUNT.size, f"storage {key!r}"))
        if count != root.numel:
            raise source.error(f"storage {key!r}: the file records {count} elements, the main pickle "
                               f"declares {root.numel}")
        nbytes = count * root.dtype.itemsize
        total += nbytes
        if total > source.budget:
            raise source.error(f"its storages add up to more than the {format_bytes(source.budget)} budget "
                               "(max_total_bytes)")
        start, offset = offset + _COUNT.size, offset + _COUNT.size + nbytes
        if offset > source.file_bytes:
            raise source.error(f"storage {key!r}: its {nbytes} bytes from byte {start} run past the end of the "
                               f"{source.file_bytes}-byte file (truncated)")
        offsets[key] = start
    if offset != source.file_bytes:
        raise source.error(f"{source.file_bytes - offset} unexpected bytes follow the last storage")
    return offsets


class _Plan(NamedTuple):
    source: _LegacyFile
    tensors: Dict[str, TensorPlan]
    roots: Dict[str, StorageRef]
    offsets: Dict[str, int]


@contextlib.contextmanager
def _planned(path, limits: Dict[str, int]) -> Iterator[_Plan]:
    """The open file with every tensor checked against its storage and every storage located; no element read."""
    check_limits(limits)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as stream:
        source = _LegacyFile(path, stream, limits)
        pickles = _read_pickles(source)
        _check_header(pickles, source)
        main = pickles.piece(3)
        check_pickle(main, source)
        unpickler = _LegacyUnpickler(main, source)
        records = select_state_dict(unpickle(unpickler, _PICKLES[3]), source)
        keys = _plain(pickles.piece(4), source, _PICKLES[4])
        offsets = _locate_storages(keys, unpickler.roots, pickles.spans[4][1], source)
        tensors = {name: plan_tensor(record, name, source) for name, record in records.items()}
        yield _Plan(source, tensors, unpickler.roots, offsets)


def load_legacy_state_dict(path, limits: Dict[str, int]) -> Dict[str, np.ndarray]:
    """``{name: array}`` of a legacy-format state dict; ``limits`` as :func:`glide_jax.hub.torch_zip.load_state_dict`
    takes them (``max_member_bytes``, ``max_total_bytes``, ``max_pickle_bytes``, ``max_compression_ratio``)."""
    with _planned(path, limits) as plan:
        check_tensor_budget(plan.tensors, plan.source, plan.source.budget)
        by_root: Dict[str, List[str]] = {}
        for name, tensor in plan.tensors.items():
            by_root.setdefault(tensor.storage.location[0], []).append(name)
        out: Dict[str, np.ndarray] = dict.fromkeys(plan.tensors)
        for key, names in by_root.items():
            root = plan.roots[key]
            itemsize = root.dtype.itemsize
            data = plan.source.read_at(plan.offsets[key], root.numel * itemsize, f"storage {key!r}")
            raw = np.frombuffer(data, dtype=np.dtype(f"<u{itemsize}"))
            for name in names:
                tensor = plan.tensors[name]
                first = tensor.storage.location[1]
                out[name] = build_tensor(tensor, raw[first:first + tensor.storage.numel])
        return out


def read_legacy_manifest(path, limits: Dict[str, int]) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of a legacy-format state dict, every check made, no element read."""
    with _planned(path, limits) as plan:
        return {name: (tensor.size, np.dtype(tensor.storage.dtype)) for name, tensor in plan.tensors.items()}
