"""The layout of a training run's checkpoints, and the rule for reading them: newest readable step first.

A workdir keeps ``checkpoints/<step>/`` (Orbax ``CheckpointManager`` steps)
with the items named below, and unreadable steps moved aside into
``checkpoints.corrupt/``. Training writes and restores them
(``glide_jax.train.checkpointing``); the hub reads the EMA weights and the
config of the newest one for sampling (``glide_jax.hub.workdir``). Both find
the folder and walk back over unreadable steps with the functions here, so the
format has one owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

CHECKPOINT_DIR = "checkpoints"  # <workdir>/checkpoints/<step>/
CORRUPT_DIR = "checkpoints.corrupt"  # <workdir>/checkpoints.corrupt/<step>-<time>/: unreadable steps set aside
TRAIN_ITEM = "train"  # step, params, optimiser state, base PRNG key, skipped-update count
EMA_ITEM = "ema_params"  # the EMA parameters: what sampling reads
DATA_ITEM = "data"  # the grain iterator state, one JSON file per host
EXPERIMENT_ITEM = "experiment"  # the ExperimentConfig as JSON (its "model" entry is a tagged model config)

Unreadable = List[Tuple[int, str]]  # (step, why) of each step that could not be read


def checkpoint_dir(workdir: Union[str, Path]) -> Path:
    """Where a workdir's checkpoints go."""
    return Path(workdir).absolute() / CHECKPOINT_DIR


def checkpoints_of(path) -> Optional[Path]:
    """The ``checkpoints/`` folder of a workdir (or the folder itself), None if ``path`` is neither."""
    path = Path(path).absolute()
    if path.name == CHECKPOINT_DIR and path.is_dir():
        return path
    return path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else None


def reason(error: BaseException) -> str:
    """One line saying why a step could not be read."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"


def first_readable(steps: Iterable[int], read: Callable[[int], Any],
                   on_unreadable: Callable[[int, str], None]) -> Tuple[Optional[int], Any, Unreadable]:
    """``read`` the newest step that reads completely: ``(step, what read returned, the newer unreadable ones)``.

    Every failure of ``read`` (any exception: a damaged file shows up as many kinds) disqualifies
    that step, is reported to ``on_unreadable(step, reason)`` and the next older step is tried;
    ``(None, None, unreadable)`` when none reads.
    """
    unreadable: Unreadable = []
    for step in sorted(steps, reverse=True):
        try:
            value = read(step)
        except Exception as error:  # any unreadable part disqualifies the whole checkpoint
            unreadable.append((step, reason(error)))
            on_unreadable(step, reason(error))
            continue
        return step, value, unreadable
    return None, None, unreadable
