"""Small ``.safetensors`` files written without torch or the safetensors package, for the reader's tests.

:func:`write_safetensors` lays tensors out as the reference writer does (header length as an
unsigned little-endian 64-bit integer, a JSON header padded with spaces to a multiple of 8 bytes,
the tensors back to back in name order). :func:`write_raw` writes any header object and data bytes
as given, so hostile files can be built field by field.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, Mapping, Optional

import ml_dtypes
import numpy as np

DTYPE_NAMES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8", np.dtype(np.uint16): "U16",
    np.dtype(np.int16): "I16", np.dtype(np.float16): "F16", np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.uint32): "U32", np.dtype(np.int32): "I32", np.dtype(np.float32): "F32",
    np.dtype(np.uint64): "U64", np.dtype(np.int64): "I64", np.dtype(np.float64): "F64",
    np.dtype(ml_dtypes.float8_e4m3fn): "F8_E4M3", np.dtype(ml_dtypes.float8_e5m2): "F8_E5M2",
}


def _little_endian_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    if array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.byteswap().view(array.dtype.newbyteorder("<"))
    return array.tobytes()


def write_raw(path: Path, header, data: bytes = b"", header_length: Optional[int] = None) -> Path:
    """``header`` (an object, or ready-made bytes) after its length (or ``header_length``), then ``data``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    length = len(raw) if header_length is None else header_length
    Path(path).write_bytes(struct.pack("<Q", length) + raw + data)
    return Path(path)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray],
                      metadata: Optional[Dict[str, str]] = None) -> Path:
    """A well-formed safetensors file holding ``tensors``."""
    header: Dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        data = _little_endian_bytes(array)
        header[name] = {"dtype": DTYPE_NAMES[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return write_raw(path, raw, b"".join(chunks))
