"""Noticing a preemption (SIGTERM) at a step every process agrees on.

A preempted Cloud TPU VM, a SLURM job past its time or ``scancel``, and
Kubernetes all send SIGTERM some seconds before killing the processes. A
multi-process run must react at the *same* step on every process: a
checkpoint is written collectively, and a process that stops early leaves
the others waiting in a collective forever.

With JAX's distributed runtime running (``jax.distributed.initialize``, see
``sharding.maybe_initialize_distributed``), its preemption notifier catches
SIGTERM in any process, the coordination service spreads the notice, and
``multihost_utils.reached_preemption_sync_point(step)`` becomes true on every
process at the same step (one past the largest step any process had reached).
Orbax's ``CheckpointManager.reached_preemption`` is this same call. That is
the mechanism used here; no signal handler of our own is involved.

A single process without the distributed runtime has no notifier (JAX's sync
point is then always false and SIGTERM would simply end the process). Starting
the runtime for one process is not an option inside a library: it must happen
before any device is touched. So in that case, and only then, a SIGTERM
handler installed for the duration of the step loop sets a flag that the next
step reads; one process cannot disagree with itself. Either way the loop saves
a checkpoint at that step and returns normally, so the command exits 0 and the
same command resumes.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """``watch.reached(step)``: whether to checkpoint and stop after ``step``; call it after every step.

    Use as a context manager around the step loop (it installs, and then
    restores, the single-process SIGTERM handler when one is needed).
    """

    def __init__(self):
        self.distributed = jax.distributed.is_initialized()
        self._signalled = threading.Event()
        self._previous: Optional[object] = None
        self.signal_step: Optional[int] = None  # the step at which the notice was acted on

    def _on_sigterm(self, signum, frame) -> None:
        self._signalled.set()

    def __enter__(self) -> "PreemptionWatch":
        if not self.distributed and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def reached(self, step: int) -> bool:
        """True at the first step (the same one on every process) after a preemption notice."""
        if self.distributed:
            hit = multihost_utils.reached_preemption_sync_point(int(step))
        else:
            hit = self._signalled.is_set()
        if hit and self.signal_step is None:
            self.signal_step = int(step)
        return hit
