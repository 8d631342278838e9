"""A progress bar that a sampling loop drives, one call per step.

``sample_loop`` calls its ``progress(step, total)`` on the host between
single-step runs of its compiled program, so the callback is not part of the
program. ``ProgressBar.get()`` returns one process-wide instance whose
``start``/``close`` swap the visible tqdm bar.
"""

from __future__ import annotations

from typing import Optional

from tqdm.auto import tqdm


class ProgressBar:
    _instance: Optional["ProgressBar"] = None

    def __init__(self):
        self._bar = None
        self._label = ""

    @classmethod
    def get(cls) -> "ProgressBar":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def start(self, label: str):
        self.close()
        self._label = label

    def __call__(self, step, total):
        total = int(total)
        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=self._label, unit="step", leave=False)
        self._bar.n = int(step) + 1
        self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
