"""Start-up of the demo: run each tab's default request once, so every sampling loop is compiled
before the first visitor's request runs, and say on the page whether that is done.

The page is served while this runs (a port that is taken fails at once, and the
visitor sees that the server is warming up instead of a refused connection);
:class:`Readiness` is what the page and the requests ask: a request that arrives
early waits for the warm-up, with a progress line saying so.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, Optional

import numpy as np

from glide_jax.demo import handlers
from glide_jax.demo.models import DemoModels

WARMING_UP = ("Warming up: compiling the sampling loops (one request per tab, about a minute on a small CPU). "
              "A request sent now waits until this is done.")


class Readiness:
    """Whether the server's warm-up is done: the page's status line, and the gate requests wait at."""

    def __init__(self):
        self._done = threading.Event()
        self._line = WARMING_UP
        self.error: Optional[str] = None  # set when the warm-up failed: requests are refused with it

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def status_line(self) -> str:
        return self._line

    def finish(self, line: str) -> None:
        """The warm-up is done; ``line`` (how long start-up took) replaces the warming-up notice."""
        self._line = f"Ready. {line}"
        self._done.set()

    def fail(self, reason: str) -> None:
        """The warm-up failed: waiting requests are released and refused with ``reason``."""
        self.error = reason
        self._line = f"The server failed to start: {reason}"
        self._done.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the warm-up is done or has failed (True), or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)


def warm_up(models: DemoModels) -> Dict[str, float]:
    """Run each tab's default request once (compiling its loops); seconds per tab, also kept on ``models``."""
    size = models.generate.base.image_size
    sketch = np.full((size, size, 3), 200, np.uint8)
    sketch[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (220, 30, 30)
    requests = {"generate": lambda: handlers.generate(models, handlers.GenerateForm(prompt="a red circle")),
                "edit": lambda: handlers.edit(models, handlers.EditForm(prompt="a red square", image=sketch))}
    if models.inpaint is not None:
        size = models.inpaint.base.image_size
        mask = np.ones((size, size), bool)
        mask[: size // 2] = False
        requests["inpaint"] = lambda: handlers.inpaint(
            models, handlers.InpaintForm(prompt="a red circle", image=sketch if sketch.shape[0] == size else
                                            np.full((size, size, 3), 200, np.uint8), mask=mask))
    for tab, run in requests.items():
        started = time.perf_counter()
        run()
        models.warmup_seconds[tab] = time.perf_counter() - started
    return models.warmup_seconds
