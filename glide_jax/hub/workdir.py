"""Reading a training run's newest EMA weights for sampling, without the training code.

A training workdir holds ``checkpoints/<step>/`` written by Orbax's
``CheckpointManager`` (see ``glide_jax/train/checkpointing.py``) with, among
others, the items ``ema_params`` (the EMA parameter tree, what GLIDE samples
with) and ``experiment`` (the run's config as JSON, whose ``model`` entry is a
tagged model config). Only those two items are read here; a step that cannot
be read is skipped with a warning and the next older one is tried. The
sentencepiece vocabulary a run learned sits beside as ``tokenizer.model``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp  # imported on use: only workdirs need it

from glide_jax.config import config_from_dict
from glide_jax.errors import InputError
from glide_jax.family import abstract_params
from glide_jax.hub.checkpoint_layout import CHECKPOINT_DIR, EMA_ITEM, EXPERIMENT_ITEM, checkpoints_of, first_readable


class UnreadableCheckpointWarning(UserWarning):
    """A workdir's newest checkpoint could not be read; an older one is used."""


def is_workdir(path) -> bool:
    return checkpoints_of(path) is not None


def _abstract_variables(config):
    """Parameter shapes placed on the first local device, for Orbax to restore into."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_params(config))


def load_workdir(path, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """``(model_config, {"params": ema_params}, experiment)`` from a workdir's newest readable checkpoint
    (or ``step``); the parameters are float32 numpy arrays."""
    directory = checkpoints_of(path)
    if directory is None:
        raise FileNotFoundError(f"{path} is not a training workdir (no {CHECKPOINT_DIR}/ folder)")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(directory, options=options) as manager:

        def read(s: int):
            experiment = manager.restore(s, args=ocp.args.Composite(**{EXPERIMENT_ITEM: ocp.args.JsonRestore()}))
            experiment = dict(experiment[EXPERIMENT_ITEM] or {})
            if "model" not in experiment:
                raise InputError(f"checkpoint {s} records no model config")
            config = config_from_dict(experiment["model"])
            restored = manager.restore(
                s, args=ocp.args.Composite(**{EMA_ITEM: ocp.args.StandardRestore(_abstract_variables(config))}))
            params = {"params": jax.tree.map(lambda a: np.asarray(a, np.float32), restored[EMA_ITEM])}
            return config, params, experiment

        if step is not None:
            return read(int(step))
        steps = manager.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory} holds no finished checkpoint")

        def warn(s: int, why: str) -> None:
            warnings.warn(f"checkpoint step {s} in {directory} is unreadable ({why}); trying an older one",
                          UnreadableCheckpointWarning, stacklevel=4)

        found, value, _ = first_readable(steps, read, warn)
        if found is not None:
            return value
    raise FileNotFoundError(f"no readable checkpoint in {directory}")

