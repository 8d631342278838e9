"""The sampler's progress callback, forwarded to whichever request is running.

The pipeline reports every step to one process-wide callback
(``ProgressBar.get()``'s instance). The demo installs one
:class:`ForwardingProgress` as that instance; a request points it at its own
sink (Gradio's ``gr.Progress``) for as long as it runs. Requests run one at a time (the queue's concurrency limit), so one sink
at a time is all it needs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from glide_jax.sampling.progress import ProgressBar

# (fraction done in [0, 1], text) -> None, e.g. a gr.Progress instance's call
Sink = Callable[..., None]


class ForwardingProgress(ProgressBar):
    """A ``ProgressBar`` that reports each step to the current request's sink instead of a terminal bar."""

    def __init__(self):
        super().__init__()
        self._sink: Optional[Sink] = None
        self._lock = threading.Lock()

    def start(self, label: str):
        self._label = label

    def __call__(self, step, total):
        with self._lock:
            sink = self._sink
        if sink is not None:
            done, total = int(step) + 1, int(total)
            sink(done / total, desc=f"{self._label}: step {done}/{total}")

    def close(self):
        pass

    @contextmanager
    def reporting_to(self, sink: Optional[Sink]) -> Iterator[None]:
        """Send steps to ``sink`` until the block ends."""
        with self._lock:
            self._sink = sink
        try:
            yield
        finally:
            with self._lock:
                self._sink = None


def install() -> ForwardingProgress:
    """Make the process-wide progress callback a ``ForwardingProgress``."""
    current = ProgressBar.get()
    if not isinstance(current, ForwardingProgress):
        current = ForwardingProgress()
        ProgressBar._instance = current
    return current
