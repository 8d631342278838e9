"""Where training metrics go: the console, TensorBoard event files and ``metrics.jsonl``.

Only process 0 writes. A resumed run first forgets what the killed run logged
after its checkpoint (TensorBoard's ``purge_step``, and the JSONL lines with a
larger step are dropped), so every log describes one consistent run. Metrics
are fetched from the devices only on logging steps, so logging does not stall
the step pipeline in between.
"""

from __future__ import annotations

import errno
import json
import math
import time
from pathlib import Path
from typing import Dict, Mapping, Optional

import jax
import numpy as np
from tensorboardX import SummaryWriter

JSONL = "metrics.jsonl"
TB_DIR = "tensorboard"


def _finite_or_none(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Throughput:
    """Images per second and ETA over the interval since the last report (compilation excluded)."""

    def __init__(self, batch_size: int, total_steps: int):
        self.batch_size, self.total_steps = batch_size, total_steps
        self._t, self._step = None, None

    def start(self, step: int) -> None:
        self._t, self._step = time.perf_counter(), step

    def report(self, step: int) -> Dict[str, float]:
        now = time.perf_counter()
        if self._t is None or step <= self._step:
            self.start(step)
            return {}
        dt, ds = now - self._t, step - self._step
        self.start(step)
        per_step = dt / ds
        return {"images_per_s": self.batch_size / per_step, "step_time_s": per_step,
                "eta_s": per_step * (self.total_steps - step)}


class MetricsWriter:
    """Console lines, TensorBoard scalars and JSON lines for one workdir."""

    def __init__(self, workdir, *, resume_step: int = 0, enabled: Optional[bool] = None, total_steps: int = 0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.total_steps = total_steps
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        workdir = Path(workdir)
        path = workdir / JSONL
        if path.exists():  # forget what a killed run logged after the checkpoint we resume from
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._jsonl = open(path, "a", encoding="utf-8")

        self._tb = SummaryWriter(str(workdir / TB_DIR), purge_step=resume_step + 1 if resume_step else None,
                                 flush_secs=30)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        try:  # first: on a full disk this fails at once, naming the file
            self._jsonl.write(json.dumps({"step": step, **{k: _finite_or_none(v) for k, v in values.items()}}) + "\n")
            self._jsonl.flush()
        except OSError as e:  # a full disk: name the file, which a bare write error does not
            raise OSError(e.errno, e.strerror, self._jsonl.name) from e
        self._check_tensorboard()
        for k, v in values.items():
            if math.isfinite(v):
                self._tb.add_scalar(k, v, step)

    def console(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        parts = [f"step {step}/{self.total_steps}"]
        for key in ("loss", "mse", "vb", "accuracy", "grad_norm"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4g}")
        if "images_per_s" in metrics:
            parts.append(f"{metrics['images_per_s']:.1f} img/s")
            parts.append(f"ETA {format_eta(metrics['eta_s'])}")
        if metrics.get("skipped"):
            parts.append(f"skipped {int(metrics['skipped'])}")
        print(" | ".join(parts), flush=True)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.enabled:
            self._check_tensorboard()
            self._tb.add_text(tag, text, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.enabled:
            self._check_tensorboard()
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def _tensorboard_alive(self) -> bool:
        """False once tensorboardX's writer thread has died (it does on a write error, a full disk say)."""
        event_writer = getattr(getattr(self._tb, "file_writer", None), "event_writer", None)
        worker = getattr(event_writer, "_worker", None)
        return worker is None or worker.is_alive()

    def _check_tensorboard(self) -> None:
        """Raise instead of queueing for a dead writer thread: once its queue is full, the next event (and
        ``close``) would wait for it forever."""
        if not self._tensorboard_alive():
            raise OSError(errno.EIO, "TensorBoard's event writer stopped (a write failed; is the disk full?)",
                          str(self._tb.logdir))

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()

    def abandon(self) -> None:
        """Close after the run failed: errors here (the same full disk, say) must not replace the first one."""
        if self.enabled:
            # a dead writer thread would never take close()'s stop signal: leave its file to the process exit
            closers = (self._tb.close, self._jsonl.close) if self._tensorboard_alive() else (self._jsonl.close,)
            for closing in closers:
                try:
                    closing()
                except Exception:  # noqa: BLE001 - the run's own failure is the one reported
                    pass
