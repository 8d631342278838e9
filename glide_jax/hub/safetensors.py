"""Read ``.safetensors`` files without torch or the safetensors package, treating the file as untrusted.

The format: 8 bytes holding the header length ``N`` (unsigned, little-endian), ``N`` bytes of
UTF-8 JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(plus an optional ``"__metadata__"`` map of strings), then the data buffer, which the offsets
index from its start. Elements are little-endian and row-major.

Everything the header declares is checked before a single tensor byte is read: the header
length against a cap and the file, the JSON's structure (no duplicate names, known dtypes,
integer shapes and offsets of sane size), each span against its shape times its item size, and
the spans together, which must tile the data buffer exactly (sorted by offset, each begins where
the previous one ends, the last ends at the end of the file), as the reference reader requires.
Only regular files are opened (a FIFO or a device could block or never end). Every refusal is
a :class:`~glide_jax.hub.checkpoint_zip.CheckpointFormatError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

import ml_dtypes
import numpy as np

from glide_jax.hub.checkpoint_zip import GiB, MiB, CheckpointFormatError, clip, describe, format_bytes

__all__ = ["CheckpointFormatError", "DTYPES", "TensorEntry", "load_safetensors", "read_safetensors_header"]

# The reference implementation refuses headers over 100 MB; real headers are a few hundred KB.
DEFAULT_MAX_HEADER_BYTES = 100 * MiB
DEFAULT_MAX_TENSOR_BYTES = 16 * GiB
MAX_NDIM = 32
MAX_DIM = 1 << 48
_MAX_NAME_CHARS = 1024
METADATA_KEY = "__metadata__"

# safetensors dtype name -> numpy dtype of one little-endian element.
DTYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
# ml_dtypes types have no byte-order variant: they are read as unsigned integers of their width.
_WORD_TYPES = frozenset({"BF16", "F8_E4M3", "F8_E5M2"})
_RAW_WIDTH = {2: np.dtype("<u2"), 1: np.dtype("u1")}


class TensorEntry(NamedTuple):
    """One checked header entry: where its bytes are in the file and what they hold."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int


def _open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file (checked before and after opening)."""
    before = os.stat(path)  # a missing or unreadable path raises its own OSError, naming the file
    if not stat.S_ISREG(before.st_mode):
        raise CheckpointFormatError(f"{path}: not a regular file; only regular files are read as safetensors")
    handle = open(path, "rb")
    after = os.fstat(handle.fileno())
    if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        handle.close()
        raise CheckpointFormatError(f"{path}: the file changed while it was being opened")
    return handle, after.st_size


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise CheckpointFormatError(f"the header names {describe(key)} twice")
        seen[key] = value
    return seen


def _int(value, what: str, error) -> int:
    if type(value) is not int or value < 0:
        raise error(f"{what} must be a non-negative integer, got {describe(value)}")
    return value


def _parse_entry(name, entry, error, data_bytes: int, max_tensor_bytes: int, data_start: int) -> TensorEntry:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME_CHARS:
        raise error(f"tensor name {describe(name)} is not a non-empty string of at most {_MAX_NAME_CHARS} characters")

    def refuse(problem: str) -> CheckpointFormatError:
        return error(f"tensor {describe(name)}: {problem}")

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        keys = sorted(map(str, entry)) if isinstance(entry, dict) else describe(entry)
        raise refuse(f"entry must hold exactly dtype, shape and data_offsets, got {clip(str(keys), 120)}")
    dtype = entry["dtype"]
    if dtype not in DTYPES:
        raise refuse(f"unknown dtype {describe(dtype)}; known: {', '.join(DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise refuse(f"shape must be a list of at most {MAX_NDIM} integers, got {describe(shape)}")
    dims = tuple(_int(d, "every dimension", refuse) for d in shape)
    if any(d > MAX_DIM for d in dims):
        raise refuse(f"shape {clip(str(dims), 120)} has a dimension over {MAX_DIM}")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise refuse(f"data_offsets must be a list [begin, end], got {describe(offsets)}")
    begin, end = (_int(o, "data_offsets", refuse) for o in offsets)
    if begin > end or end > data_bytes:
        raise refuse(f"data_offsets [{begin}, {end}] do not lie within the {data_bytes}-byte data buffer")
    nbytes = math.prod(dims) * DTYPES[dtype].itemsize
    if nbytes != end - begin:
        raise refuse(f"shape {list(dims)} of {dtype} needs {nbytes} bytes but data_offsets span {end - begin}")
    if nbytes > max_tensor_bytes:
        raise refuse(f"{format_bytes(nbytes)} is over the {format_bytes(max_tensor_bytes)} limit (max_tensor_bytes)")
    return TensorEntry(name, dtype, dims, data_start + begin, nbytes)


def _check_tiling(entries: Iterable[TensorEntry], data_start: int, data_bytes: int, error) -> None:
    """The spans, sorted, must follow one another without gap or overlap and fill the buffer."""
    position = data_start
    for entry in sorted(entries, key=lambda e: (e.start, e.nbytes)):
        if entry.start != position:
            kind = "overlaps the tensor before it" if entry.start < position else "leaves a gap before it"
            raise error(f"tensor {describe(entry.name)} at data offset {entry.start - data_start} {kind} "
                        f"(which ends at {position - data_start})")
        position += entry.nbytes
    if position != data_start + data_bytes:
        raise error(f"the tensors cover {position - data_start} bytes of the {data_bytes}-byte data buffer")


def _read_header(handle, file_bytes: int, path: Path, max_header_bytes: int, max_tensor_bytes: int):
    def error(problem: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{path}: {problem}")

    if file_bytes < 8:
        raise error(f"{file_bytes} bytes is too short for a safetensors file (the header length alone takes 8)")
    header_bytes = int.from_bytes(handle.read(8), "little")
    if header_bytes > max_header_bytes:
        raise error(f"header length {header_bytes} is over the {format_bytes(max_header_bytes)} limit")
    if 8 + header_bytes > file_bytes:
        raise error(f"header length {header_bytes} runs past the end of the {file_bytes}-byte file")
    raw = handle.read(header_bytes)
    if len(raw) != header_bytes:
        raise error(f"the file ended inside the header ({len(raw)} of {header_bytes} bytes)")
    if not raw.startswith(b"{"):
        raise error("the header is not a JSON object (it must start with '{')")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except CheckpointFormatError as e:
        raise error(str(e)) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"the header is not valid UTF-8 JSON ({type(e).__name__}: {clip(str(e), 120)})") from None
    metadata = header.pop(METADATA_KEY, None)
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise error(f"{METADATA_KEY} must map strings to strings")
    data_start = 8 + header_bytes
    data_bytes = file_bytes - data_start
    entries = {name: _parse_entry(name, entry, error, data_bytes, max_tensor_bytes, data_start)
               for name, entry in header.items()}
    _check_tiling(entries.values(), data_start, data_bytes, error)
    return entries, dict(metadata or {})


def read_safetensors_header(path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                            max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
                            ) -> Tuple[Dict[str, TensorEntry], Dict[str, str]]:
    """``({name: TensorEntry}, metadata)`` of a safetensors file, fully checked; no tensor data is read."""
    path = Path(path)
    handle, file_bytes = _open_regular(path)
    with handle:
        return _read_header(handle, file_bytes, path, max_header_bytes, max_tensor_bytes)


def _decode(raw: bytes, entry: TensorEntry) -> np.ndarray:
    """A native-byte-order, writable copy of one tensor's little-endian bytes."""
    dtype = DTYPES[entry.dtype]
    if entry.dtype == "BOOL":  # any non-zero byte is true, as in the reference reader
        array = np.frombuffer(raw, np.uint8) != 0
    elif entry.dtype in _WORD_TYPES:  # ml_dtypes types: swap as unsigned words, then reinterpret
        word = _RAW_WIDTH[dtype.itemsize]
        array = np.frombuffer(raw, word).astype(word.newbyteorder("=")).view(dtype)
    else:
        array = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
    return array.reshape(entry.shape)


def load_safetensors(path, names: Optional[Iterable[str]] = None, *,
                     max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                     max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> Dict[str, np.ndarray]:
    """``{name: numpy array}`` (native byte order, writable) of a safetensors file, or of ``names`` in it.

    The header is checked completely (see the module docstring) before any tensor is read;
    ``max_tensor_bytes`` caps each tensor, ``max_header_bytes`` the JSON header.
    """
    path = Path(path)
    handle, file_bytes = _open_regular(path)
    with handle:
        entries, _ = _read_header(handle, file_bytes, path, max_header_bytes, max_tensor_bytes)
        wanted = list(entries) if names is None else list(names)
        unknown = [n for n in wanted if n not in entries]
        if unknown:
            raise KeyError(f"{path}: no tensor named {clip(', '.join(map(repr, unknown[:5])), 200)} "
                           f"(the file holds {len(entries)})")
        out = {}
        for name in wanted:
            entry = entries[name]
            handle.seek(entry.start)
            raw = handle.read(entry.nbytes)
            if len(raw) != entry.nbytes:
                raise CheckpointFormatError(f"{path}: tensor {describe(name)} was cut short "
                                            f"({len(raw)} of {entry.nbytes} bytes; the file shrank while read)")
            out[name] = _decode(raw, entry)
        return out
