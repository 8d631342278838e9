"""One failure, one line: what the error boundary does about errors raised outside the main thread.

A full disk during training fails every writer at once: Orbax's save threads
log one traceback each, its unfinished futures are reported again when they
are garbage-collected, TensorBoard's writer thread and its exit hook fail too,
and the one ``error:`` line the user needs ends up among hundreds of tracebacks.
:class:`BackgroundErrors`, entered by :func:`glide_jax.errors.run_command`,
keeps that line readable:

* while the command runs, background errors are shown as before until one
  says the disk is full (``ENOSPC``/``EDQUOT``, also as TensorStore spells
  it); that one prints a single ``warning:`` line;
* a native callback that reaches an event loop after its owner closed it
  (``RuntimeError: Event loop is closed``, printed once per pending write)
  is counted, and mentioned in one line at the end unless a full disk
  explains it;
* from then on every report from background threads (their uncaught
  exceptions, exceptions printed from native callbacks, exit hooks) and every
  ``ERROR`` log record is a consequence of the full disk (writers whose
  files, event loops or futures died with it), so they are counted, not
  shown; if the command then fails on the full disk this lasts until the
  process ends, otherwise the hooks are removed when the command returns.

``GLIDE_JAX_TRACEBACK=1`` turns all of this off.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
from typing import Iterator, List, Optional, TextIO

_DISK_FULL_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
# How libraries that do not raise OSError (TensorStore, under Orbax) report the same errno in text.
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='?(28|122)'?")
_PATH_IN_TEXT = re.compile(r'(?:Failed writing|local file|writing local file): "([^"]+)"')


def _chain(exc: Optional[BaseException]) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: Optional[BaseException]) -> Optional[str]:
    """``"no space left on the device (<file>)"`` if ``exc`` or its cause says the disk is full, else None."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in _DISK_FULL_ERRNOS:
            files = [str(f) for f in (item.filename, item.filename2) if f]
            return _DISK_FULL_ERRNOS[item.errno] + (f" ({', '.join(files)})" if files else "")
        text = str(item)
        if _DISK_FULL_TEXT.search(text):
            words = "disk quota exceeded" if "quota" in text or "122" in text else "no space left on the device"
            paths = _PATH_IN_TEXT.findall(text)
            return words + (f" ({paths[-1]})" if paths else "")
    return None


def _record_error(record: logging.LogRecord) -> Optional[BaseException]:
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    try:
        message = record.getMessage()
    except Exception:  # a record whose arguments do not format: not ours to judge
        return None
    return RuntimeError(message) if _DISK_FULL_TEXT.search(message) else None


class BackgroundErrors:
    """Context manager that quiets background errors that follow from a full disk (see the module doc)."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream
        self.suppressed = 0
        self.quiet = False  # after the command failed on a full disk: suppress every background report
        self.closed_loop_callbacks = 0
        self._saved = None

    # -------------------------------------------------------------- the hooks

    def _background(self, exc: Optional[BaseException]) -> bool:
        """True if a background report of ``exc`` is to be suppressed (counted), False to show it."""
        if self.quiet:
            self.suppressed += 1
            return True
        reason = disk_full(exc)
        if reason is None:
            return False
        self.suppressed += 1
        self.quiet = True
        stream = sys.stderr if self.stream is None else self.stream
        stream.write(f"warning: a background writer failed: {reason}; the command stops when it next waits "
                     "for it\n")
        stream.flush()
        return True

    def filter(self, record: logging.LogRecord) -> bool:
        """``logging.Filter`` protocol: drop the records to be suppressed."""
        if self.quiet and record.levelno >= logging.ERROR:
            self.suppressed += 1
            return False
        return not (record.levelno >= logging.WARNING and self._background(_record_error(record)))

    def _thread_hook(self, args) -> None:
        if not self._background(args.exc_value):
            self._saved["thread"](args)

    def _unraisable_hook(self, unraisable) -> None:
        if not self._background(unraisable.exc_value):
            self._saved["unraisable"](unraisable)

    def _except_hook(self, exc_type, exc, tb) -> None:
        """``sys.excepthook``, which inside the command only native code's callbacks reach (``PyErr_Print``).

        A callback into an event loop that is already closed is the echo of an earlier failure of the loop's
        owner (reported by that owner), not a failure of its own: those are counted, not printed.
        """
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            self.closed_loop_callbacks += 1
        elif not self._background(exc):
            self._saved["except"](exc_type, exc, tb)

    # -------------------------------------------------------------- installing

    def _handlers(self) -> List[logging.Handler]:
        handlers = list(logging.getLogger().handlers)
        if logging.lastResort is not None:
            handlers.append(logging.lastResort)
        return handlers

    def install(self) -> "BackgroundErrors":
        if os.environ.get("GLIDE_JAX_TRACEBACK") or self._saved is not None:
            return self
        self._saved = {"thread": threading.excepthook, "unraisable": sys.unraisablehook,
                       "except": sys.excepthook, "handlers": self._handlers()}
        threading.excepthook = self._thread_hook
        sys.unraisablehook = self._unraisable_hook
        sys.excepthook = self._except_hook
        for handler in self._saved["handlers"]:
            handler.addFilter(self)
        return self

    def uninstall(self) -> None:
        if self._saved is None:
            return
        if threading.excepthook == self._thread_hook:
            threading.excepthook = self._saved["thread"]
        if sys.unraisablehook == self._unraisable_hook:
            sys.unraisablehook = self._saved["unraisable"]
        if sys.excepthook == self._except_hook:
            sys.excepthook = self._saved["except"]
        for handler in self._saved["handlers"]:
            handler.removeFilter(self)
        self._saved = None

    def __enter__(self) -> "BackgroundErrors":
        return self.install()

    def __exit__(self, exc_type, exc, tb) -> None:
        """After a failure on a full disk, stay installed and quiet until the process ends; else uninstall."""
        if self._saved is not None and disk_full(exc) is not None:
            self.quiet = True
            return
        if self.closed_loop_callbacks and not self.suppressed:
            stream = sys.stderr if self.stream is None else self.stream
            stream.write(f"warning: {self.closed_loop_callbacks} callbacks of a background task reached its "
                         "event loop after it had closed (the task failed earlier)\n")
            stream.flush()
        self.quiet = False
        self.uninstall()
