"""The zip container of a ``.pt`` checkpoint, read as untrusted input under size limits.

Every member's declared sizes are checked before anything is decompressed:
against the caller's limits, against the length of the file itself (compressed
bytes must fit in it), against a compression ratio, and against one byte budget
for the whole file. A member is then decompressed in bounded chunks into a
buffer of its declared size, so a header that lies about the size cannot make
the reader allocate more than it declared, and a header that understates it
ends in a CRC error. Every refusal is a :class:`CheckpointFormatError` naming
the file and the member.
"""

from __future__ import annotations

import collections
import os
import zipfile
from pathlib import Path
from typing import BinaryIO, Dict, Optional

from glide_jax.errors import InputError
from glide_jax.regular_files import open_regular_file

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
_CHUNK_BYTES = 16 * MiB


class CheckpointFormatError(InputError):
    """A checkpoint file the reader refuses: malformed, truncated, hostile, or over a size limit."""


def describe(value) -> str:
    """A short description of an untrusted value for error messages: no unbounded repr, no huge-int str."""
    if isinstance(value, int) and abs(value).bit_length() > 128:
        return f"an integer of {abs(value).bit_length()} bits"
    if isinstance(value, (int, float)) or value is None:
        return repr(value)
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    return f"a {type(value).__name__}"


def clip(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _quoted(member_name: str) -> str:
    return clip(repr(member_name), 200)


def format_bytes(count: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


def check_limits(limits: Dict[str, int]) -> None:
    for name, value in limits.items():
        if type(value) is not int or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def byte_budget(limits: Dict[str, int], file_bytes: int) -> int:
    """What reading one checkpoint file may allocate in all: ``max_total_bytes``, lowered to
    ``max_compression_ratio`` times the file's size but never below ``RATIO_EXEMPT_BYTES``."""
    return min(limits["max_total_bytes"], max(RATIO_EXEMPT_BYTES, limits["max_compression_ratio"] * file_bytes))


class CheckpointZip:
    """An open checkpoint zip and the byte budget every decompression is charged against.

    The budget is ``max_total_bytes``, lowered to ``max_compression_ratio`` times the
    file's size (but never below ``RATIO_EXEMPT_BYTES``), so a small file cannot
    expand into gigabytes through many members either.
    """

    def __init__(self, path: Path, archive: zipfile.ZipFile, limits: Dict[str, int], handle: BinaryIO):
        self.path = path
        self.zip = archive
        self.limits = limits
        self._handle = handle
        self.file_bytes = os.fstat(handle.fileno()).st_size
        self.budget = byte_budget(limits, self.file_bytes)
        self.decompressed = 0
        infos = archive.infolist()
        counts = collections.Counter(info.filename for info in infos)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise self.error(f"duplicate member names {clip(str(duplicates[:5]))}; "
                             "a zip written by torch.save has none")
        self.members = {info.filename: info for info in infos}

    @classmethod
    def open(cls, path: Path, limits: Dict[str, int]) -> "CheckpointZip":
        """Open ``path`` (a regular file only: see :mod:`glide_jax.regular_files`) and read its directory."""
        handle = open_regular_file(path, "checkpoint")
        try:
            try:
                archive = zipfile.ZipFile(handle)
            except Exception as e:  # zipfile reports a damaged directory in many exception types
                raise CheckpointFormatError(f"{path}: unreadable zip ({type(e).__name__}: {clip(str(e))})") from e
            try:
                return cls(path, archive, limits, handle)
            except BaseException:
                archive.close()
                raise
        except BaseException:
            handle.close()
            raise

    def close(self) -> None:
        self.zip.close()
        self._handle.close()

    def __enter__(self) -> "CheckpointZip":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def error(self, message: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{self.path}: {message}")

    def check(self, name: str, what: str, max_bytes: int, expected_bytes: Optional[int] = None) -> zipfile.ZipInfo:
        """Check a member's declared sizes against the limits and the file, and reserve them from the budget."""
        info = self.members.get(name)
        if info is None:
            raise self.error(f"{what}: the archive has no member {_quoted(name)}")
        size, compressed = info.file_size, info.compress_size
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"member {_quoted(name)} uses zip compression method {info.compress_type}; "
                             "only stored (as torch.save writes) and deflated members are read")
        if info.flag_bits & 0x1:
            raise self.error(f"member {_quoted(name)} is encrypted")
        if expected_bytes is not None and size != expected_bytes:
            raise self.error(f"{what}: member {_quoted(name)} holds {size} bytes, the pickle declares {expected_bytes}")
        if size > max_bytes:
            raise self.error(f"{what}: member {_quoted(name)} declares {format_bytes(size)}, over the "
                             f"{format_bytes(max_bytes)} limit")
        if info.header_offset + compressed > self.file_bytes:
            raise self.error(f"member {_quoted(name)} declares {compressed} compressed bytes at offset "
                             f"{info.header_offset}, past the end of the {self.file_bytes}-byte file")
        if info.compress_type == zipfile.ZIP_STORED and size != compressed:
            raise self.error(f"stored member {_quoted(name)} declares {size} bytes but {compressed} stored bytes")
        ratio_limit = self.limits["max_compression_ratio"]
        if size > RATIO_EXEMPT_BYTES and size > ratio_limit * compressed:
            ratio = size / max(compressed, 1)
            raise self.error(f"member {_quoted(name)} declares {format_bytes(size)} from {format_bytes(compressed)} "
                             f"compressed (ratio {ratio:.0f} > max_compression_ratio={ratio_limit})")
        if self.decompressed + size > self.budget:
            raise self.error(f"{what}: decompressing member {_quoted(name)} ({format_bytes(size)}) would bring "
                             f"the total to {format_bytes(self.decompressed + size)}, over the "
                             f"{format_bytes(self.budget)} budget (max_total_bytes, or max_compression_ratio "
                             "times the file size)")
        self.decompressed += size
        return info

    def read(self, info: zipfile.ZipInfo, what: str) -> bytearray:
        """Decompress a checked member in bounded chunks: never more than its declared size."""
        size = info.file_size
        buffer = bytearray(size)
        filled = 0
        try:
            with self.zip.open(info) as stream, memoryview(buffer) as view:
                while filled < size:
                    chunk = stream.read(min(_CHUNK_BYTES, size - filled))
                    if not chunk:
                        raise self.error(f"{what}: member {_quoted(info.filename)} ends after {filled} of its {size} "
                                         "declared bytes")
                    view[filled:filled + len(chunk)] = chunk
                    filled += len(chunk)
        except (CheckpointFormatError, MemoryError):
            raise
        except Exception as e:  # zipfile and zlib report damage (bad CRC, corrupt stream, bad header) in many types
            problem = f"{type(e).__name__}: {clip(str(e))}"
            raise self.error(f"{what}: member {_quoted(info.filename)} is unreadable ({problem})") from e
        return buffer
