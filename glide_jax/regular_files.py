"""Opening the files a user names as input (checkpoints, model folders, vocabularies): regular files only.

A path that resolves to anything else is refused before a byte is read. A
character device such as ``/dev/zero`` never ends, so a reader that slurps it
grows without bound; opening a named pipe (FIFO) for reading blocks until some
writer appears, which may be never; a directory or a socket cannot be read at
all. Checking only that the path exists lets all of these through, so every
reader of user-named files goes through :func:`check_regular_file` (for
libraries that take a path) or :func:`open_regular_file` (which checks the
opened descriptor itself, so the file cannot be swapped between check and use).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Union

from glide_jax.errors import InputError

PathLike = Union[str, os.PathLike]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotARegularFileError(InputError):
    """A path given as an input file that is (or whose symlink leads to) a device, pipe, socket or folder."""


def describe_kind(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file is, in words."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def _refuse(path: PathLike, mode: int, what: str) -> NotARegularFileError:
    target = os.path.realpath(path)
    via = f" (it leads to {target})" if target != os.path.abspath(path) else ""
    return NotARegularFileError(f"{path} is {describe_kind(mode)}{via}, not a regular file; "
                                f"the {what} must be an ordinary file")


def check_regular_file(path: PathLike, what: str = "input") -> Path:
    """``path`` as a Path if it is a regular file once symlinks are followed.

    Raises FileNotFoundError (from ``os.stat``) if it does not exist and
    :class:`NotARegularFileError` naming the path and its kind otherwise.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode, what)
    return Path(path)


def is_present(path: PathLike, what: str = "input") -> bool:
    """False if nothing is at ``path``; True if a regular file is; refuses anything else at it."""
    try:
        check_regular_file(path, what)
    except FileNotFoundError:
        return False
    return True


def open_regular_file(path: PathLike, what: str = "input") -> BinaryIO:
    """``path`` opened for binary reading, refused (without blocking) unless it is a regular file.

    The file is opened non-blocking, so a FIFO without a writer does not hang,
    and its type is taken from the open descriptor; a regular file is then
    switched back to blocking reads.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, mode, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: PathLike, what: str = "input") -> bytes:
    """The contents of the regular file at ``path`` (see :func:`open_regular_file`)."""
    with open_regular_file(path, what) as handle:
        return handle.read()
