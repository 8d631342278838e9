"""Checkpoints of a training run: asynchronous Orbax saves and fall-back restore.

A checkpoint ``<workdir>/checkpoints/<step>/`` holds the items

* ``train``      -- step, params, optimiser state, base PRNG key, skipped-update count (and a distillation
  run's frozen ``teacher_params``);
* ``ema_params`` -- the EMA weights, a separate item so sampling reads only them;
* ``data``       -- the grain iterator state, one JSON file per host;
* ``experiment`` -- the full ``ExperimentConfig`` as JSON.

Together with the per-step PRNG ``fold_in(key(seed), step)`` this makes a run
restartable at any moment: kill it (even ``kill -9`` during a save), rerun the
same command, and it continues from the newest *readable* checkpoint to the
same final parameters, bit for bit on one CPU. Orbax writes each step into a
temporary directory and renames it when complete, so an interrupted save never
looks finished; but Orbax does not survive a finished checkpoint that was later
damaged (a truncated or deleted file): it raises. ``Checkpointer.restore``
therefore walks back from the newest step, warns about each unreadable one,
moves it aside (to ``<workdir>/checkpoints.corrupt/``, so the step can be
saved afresh) and uses the first that restores completely. When none of them
reads, nothing is moved and :class:`AllCheckpointsCorruptError` stops the run,
unless the caller allows a restart (``train.restart_if_corrupt``), in which
case they are all set aside and the run starts from step 0. The iterator state
is applied only after the whole checkpoint was read. Sampling reads a workdir's
EMA weights without the training code (``glide_jax.hub.workdir``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import jax
import orbax.checkpoint as ocp
from grain.checkpoint import CheckpointRestore as GrainRestore
from grain.checkpoint import CheckpointSave as GrainSave

from glide_jax.errors import InputError
from glide_jax.hub.checkpoint_layout import (CORRUPT_DIR, DATA_ITEM, EMA_ITEM, EXPERIMENT_ITEM, TRAIN_ITEM,
                                             checkpoint_dir, first_readable)
from glide_jax.train.sharding import wait_for_all_processes
from glide_jax.train.state import TrainState

log = logging.getLogger(__name__)



class CorruptCheckpointWarning(UserWarning):
    """The newest checkpoint could not be read; an older one is used."""


class AllCheckpointsCorruptError(InputError):
    """A run has checkpoints but none of them reads: starting over would silently discard the run."""


class _IteratorState:
    """Stands in for a grain iterator towards grain's Orbax handler.

    Saving: holds the state captured when the save was *requested* (the real
    iterator moves on while an async save runs). Restoring: receives the state
    so it is applied to the real iterator only once the whole checkpoint is read.
    """

    def __init__(self, state: Optional[bytes] = None):
        self.state = state

    def get_state(self) -> bytes:
        return self.state

    def set_state(self, state: bytes) -> None:
        self.state = state

    def start_prefetch(self) -> None:
        pass


def _train_item(state: TrainState) -> Dict[str, Any]:
    item = {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": state.rng,
            "skipped": state.skipped}
    if state.teacher_params is not None:  # a distillation run's frozen teacher
        item["teacher_params"] = state.teacher_params
    return item


class IncompatibleCheckpointError(InputError):
    """A readable checkpoint that cannot continue this run (e.g. its data iterator is for another dataset)."""


class Checkpointer:
    """Saves and restores ``TrainState`` (+ data iterator state + experiment config) under a workdir."""

    def __init__(self, workdir: Union[str, Path], *, keep_last: int = 3, keep_every: int = 0,
                 async_save: bool = True):
        self.workdir = Path(workdir).absolute()
        self.directory = checkpoint_dir(self.workdir)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep_last), 1),
            keep_period=int(keep_every) or None,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._barriers = 0

    # ------------------------------------------------------------------ saving

    def save(self, state: TrainState, data_state: Optional[bytes] = None, experiment: Optional[Dict] = None,
             *, force: bool = False) -> bool:
        """Start saving ``state`` at its step (asynchronously unless disabled); False if already saved.

        ``data_state``: the iterator's ``get_state()`` *now* (the iterator moves on during an async save);
        ``experiment``: the config as JSON data (``glide_jax.config.config_to_dict``)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        items = {
            TRAIN_ITEM: ocp.args.StandardSave(_train_item(state)),
            EMA_ITEM: ocp.args.StandardSave(state.ema_params),
        }
        if data_state is not None:
            items[DATA_ITEM] = GrainSave(_IteratorState(data_state))
        items[EXPERIMENT_ITEM] = ocp.args.JsonSave(experiment or {})
        return bool(self.manager.save(step, args=ocp.args.Composite(**items), force=force))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def abandon(self) -> None:
        """Close after the run failed: wait for a pending save, but let the run's own error be the one raised
        (a save failing on the same full disk would otherwise replace it)."""
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 - logged in one line, the caller re-raises its own failure
            log.warning("closing the checkpoints after a failure: %s", str(e).splitlines()[0] if str(e) else
                        type(e).__name__)

    def all_steps(self):
        return sorted(self.manager.all_steps())

    # ------------------------------------------------------------------ restoring

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = self.directory / str(step)
            if src.exists():
                dst = self.workdir / CORRUPT_DIR / f"{step}-{int(time.time())}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), str(dst))
        self._barriers += 1  # the same count on every process: they set aside the same steps in order
        wait_for_all_processes(f"set_aside_{step}_{self._barriers}")
        self.manager.close()
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def restore(self, abstract_state: TrainState, data_iterator: Any = None,
                restart_if_corrupt: bool = False) -> Optional[Tuple[TrainState, Dict]]:
        """Newest readable checkpoint as ``(state, experiment_dict)``, or None if there is none.

        ``abstract_state`` holds ``jax.ShapeDtypeStruct``s with shardings: the
        arrays are restored directly into that layout. ``data_iterator`` (if
        given) gets the saved iterator state; a state it rejects (another data
        source) raises ``IncompatibleCheckpointError`` and leaves every
        checkpoint in place, since the checkpoint itself is sound. Unreadable
        checkpoints newer than the one used are moved aside; when none reads,
        :class:`AllCheckpointsCorruptError` is raised with all of them left in
        place, unless ``restart_if_corrupt`` (then they are moved aside and None
        is returned). If None is returned the iterator may have been touched:
        build a fresh one.
        """
        box = _IteratorState()

        def read(step: int):
            box.state = None
            return self._read(step, abstract_state, box if data_iterator is not None else None)

        def warn(step: int, why: str) -> None:
            warnings.warn(f"checkpoint step {step} in {self.directory} is unreadable ({why})",
                          CorruptCheckpointWarning, stacklevel=4)

        step, value, unreadable = first_readable(self.manager.all_steps(), read, warn)
        if step is not None:
            state, out = value
            for bad, _ in unreadable:
                self._set_aside(bad)
            if data_iterator is not None:
                try:
                    data_iterator.set_state(box.state)
                except Exception as e:  # a readable checkpoint of another dataset: not corruption, keep it
                    raise IncompatibleCheckpointError(
                        f"checkpoint step {step} in {self.directory} was written while reading another data "
                        f"source than this config's ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "resume with the run's data settings (see its experiment.json) or use a new workdir. "
                        "Nothing was moved."
                    ) from e
            return state, dict(out[EXPERIMENT_ITEM] or {})
        if unreadable and not restart_if_corrupt:
            listed = "; ".join(f"step {step}: {reason}" for step, reason in unreadable)
            raise AllCheckpointsCorruptError(
                f"none of the {len(unreadable)} checkpoints in {self.directory} can be read ({listed}); "
                "nothing was moved. Restore them from a backup, or start the run again from step 0 with "
                f"--set train.restart_if_corrupt=true (they are then moved to {CORRUPT_DIR}/)")
        for bad, _ in unreadable:
            self._set_aside(bad)
        return None

    def _read(self, step: int, abstract_state: TrainState, box: Optional[_IteratorState]):
        """``(state, raw items)`` of one checkpoint, every part read completely; raises if any part is bad."""
        items = {
            TRAIN_ITEM: ocp.args.StandardRestore(_train_item(abstract_state)),
            EMA_ITEM: ocp.args.StandardRestore(abstract_state.ema_params),
            EXPERIMENT_ITEM: ocp.args.JsonRestore(),
        }
        if box is not None:
            items[DATA_ITEM] = GrainRestore(box)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        train = out[TRAIN_ITEM]
        state = TrainState(step=train["step"], params=train["params"], ema_params=out[EMA_ITEM],
                           opt_state=train["opt_state"], rng=train["rng"], skipped=train["skipped"],
                           teacher_params=train.get("teacher_params"))
        if int(jax.device_get(state.step)) != step:
            raise InputError(f"checkpoint {step} holds step {int(state.step)}")
        jax.block_until_ready(state)
        if box is not None:
            json.loads(box.state)  # a damaged iterator file is corruption, not another dataset
        return state, out
