"""Training tasks: one registered object per thing a run can train, named by ``ExperimentConfig.task``.

A task says which model family it trains and which kinds of that family's
models it accepts, how its parameters start from ``train.init_from`` (the
warm start), and whether it must have one. ``experiments.train`` reads the
task from the config; the config checks itself against its task when it is
built. New tasks (a distillation, say) subclass nothing: they are
:class:`Task` values given to :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Tuple

from glide_jax.errors import InputError
from glide_jax.family import family_named, family_of
from glide_jax.named import Registry
from glide_jax.train import warm_start

Params = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a run of this task trains and how it starts."""

    name: str  # the value of ExperimentConfig.task
    family: str  # the model family it trains (glide_jax.families)
    kinds: Tuple[str, ...] = ()  # the family's model kinds it accepts (family.kind(config)); empty: any
    # (source params, source config, target config) -> target params, for train.init_from
    start: Callable[[Params, Any, Any], Params] = warm_start.same_model_params
    needs_init_from: bool = False  # a fine-tuning task: refuses to start from random weights
    description: str = ""  # one line for help texts

    def check(self, cfg) -> None:
        """Refuse an ``ExperimentConfig`` this task cannot train (called when the config is built)."""
        family = family_of(cfg.model)
        if family is not family_named(self.family):
            raise InputError(f"task {self.name!r} does not match a {type(cfg.model).__name__} model (it trains "
                             f"{self.family} models)")
        if self.kinds and family.kind(cfg.model) not in self.kinds:
            raise InputError(f"task {self.name!r} cannot train a {family.kind(cfg.model)!r} model "
                             f"(it trains {', '.join(self.kinds)})")
        family.check_training(cfg)

    def check_start(self, cfg) -> None:
        """Refuse to start a run that this task cannot start (called before training)."""
        if self.needs_init_from and not cfg.train.init_from:
            raise InputError(f"{self.description or 'task ' + repr(self.name)} fine-tunes a trained model: set "
                             "train.init_from (a training workdir, a model directory, a released name such as 'base', "
                             "or a .pt/.npz file)")


_TASKS: Registry[Task] = Registry("training task")


def register_task(task: Task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task, got {type(task).__name__}")
    return _TASKS.register(task.name, task)


def task_named(name: str) -> Task:
    if name not in _TASKS:
        raise InputError(f"task must be one of {_TASKS.names()}, got {name!r}")
    return _TASKS.get(name)


def registered_tasks() -> List[Task]:
    return _TASKS.values()


register_task(Task("base", "unet", ("base",), description="the text-to-image base model"))
register_task(Task("upsample", "unet", ("upsample",), description="the text-conditional upsampler"))
register_task(Task("inpaint", "unet", ("inpaint", "upsample-inpaint"), start=warm_start.inpaint_params,
                   needs_init_from=True, description="inpainting"))
register_task(Task("clip", "clip", description="the noise-aware CLIP of CLIP guidance"))
