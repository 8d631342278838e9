"""The one error boundary of the command-line entry points (``glide-jax`` and ``experiments.train_*``).

A failure the user can fix (a missing or damaged file, an image that is not
one, a bad config, a refused checkpoint, a failed download, no permission, a
full disk) ends the command with ``error: <what> (<which file>)`` on stderr
and exit status 2. Anything else is a bug: its traceback is printed and the
status is 1, so it stays visible and reportable.

What counts as "the user can fix it" is decided here once, by :data:`ANTICIPATED`:
the library's own :class:`InputError` (a ``ValueError`` subclass raised wherever it
checks what it was given, expected to name the file it read), ``OSError`` (whose
file comes from the exception itself), damaged archives and pickles, and a full
disk however a library words it. A plain ``ValueError`` is not in the list: raised
by a bug, it prints its traceback and exits 1.

``GLIDE_JAX_TRACEBACK=1`` prints the traceback of anticipated failures too, for
the rare case where one of them hides a bug.

Warnings (:class:`InputWarning` and its subclasses) are how the library says
"this input was accepted, but probably not as you meant it"; the boundary
prints them as one ``warning: ...`` line each, without the source location
Python adds for programmers.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import sys
import traceback
import warnings
import zipfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO

from PIL import Image

from glide_jax.background_errors import BackgroundErrors, disk_full


class InputError(ValueError):
    """A failure the user can fix: bad input, a bad config, a refused, damaged or missing file's content.

    The library raises it (or a subclass) wherever it checks what it was given; the
    command-line boundary prints it as one ``error:`` line. A plain ``ValueError`` from
    anywhere else is a bug and keeps its traceback. It is a ``ValueError`` so that
    code catching bad values keeps working.
    """


class InputWarning(UserWarning):
    """Input that was accepted but is probably not what the user meant (said once per call)."""


# Exception types that mean "the input or the environment is wrong", not "the code is wrong". PIL's
# DecompressionBombError is not an OSError: PIL derives it from Exception.
ANTICIPATED = (InputError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, json.JSONDecodeError,
               Image.DecompressionBombError)

_ERRNO_WORDS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "the file system is read-only"}


def describe(exc: BaseException) -> str:
    """One line saying what went wrong and, when the exception knows it, with which file."""
    full = disk_full(exc)  # also as TensorStore words it, inside a ValueError
    if full is not None:
        return full
    if isinstance(exc, OSError) and exc.errno is not None and getattr(exc, "strerror", None):
        what = _ERRNO_WORDS.get(exc.errno, exc.strerror)
        files = [f for f in (exc.filename, exc.filename2) if f]
        return f"{what} ({', '.join(map(str, files))})" if files else what
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split("\n")[:1]) if isinstance(exc, zipfile.BadZipFile) else text


def show_warning(message, category, filename, lineno, file: Optional[TextIO] = None, line=None) -> None:
    """``warnings.showwarning`` for end users: input warnings as ``warning: ...``, others as Python prints them."""
    stream = sys.stderr if file is None else file
    if issubclass(category, InputWarning):
        print(f"warning: {message}", file=stream, flush=True)
    else:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextmanager
def user_warnings() -> Iterator[None]:
    """Within the block, input warnings print as ``warning: ...`` lines (every time, not once per place)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show_warning
        yield


def run_command(command: Callable[[], int], stream: Optional[TextIO] = None) -> int:
    """Run ``command()`` inside the boundary; return its status, 2 for anticipated failures, 1 for bugs."""
    stream = sys.stderr if stream is None else stream
    try:
        with user_warnings(), BackgroundErrors(stream):  # a full disk: one line, not every thread's traceback
            return command()
    except KeyboardInterrupt:
        print("error: interrupted", file=stream, flush=True)
        return 130
    except Exception as exc:
        if not is_anticipated(exc):  # a bug: keep the traceback
            traceback.print_exc(file=stream)
            return 1
        if os.environ.get("GLIDE_JAX_TRACEBACK"):
            traceback.print_exc(file=stream)
        print(f"error: {describe(exc)}", file=stream, flush=True)
        return 2


def is_anticipated(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure the user can fix (:data:`ANTICIPATED`, or a full disk however it is worded)."""
    return isinstance(exc, ANTICIPATED) or disk_full(exc) is not None
