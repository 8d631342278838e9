"""Training tasks: one registered object per thing a run can train, named by ``ExperimentConfig.task``.

A task says which model family it trains and which kinds of that family's
models it accepts, how its parameters start from ``train.init_from`` (the
warm start), and whether it must have one. ``experiments.train`` reads the
task from the config; the config checks itself against its task when it is
built. New tasks subclass nothing: they are :class:`Task` values given to
:func:`register_task`. A task may bring its own train step (``make_step``)
and carry a frozen teacher in the train state (``teacher``), as the
distillation tasks of :mod:`glide_jax.train.distill` do. That module builds on
the train state and steps, which import this one, so it is imported on the
first look-up (:func:`_load_builtin_tasks`) rather than from this module's top.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    # (model config, train config, tx, mesh=) -> the pure train step; None: the family's make_train_step
    make_step: Optional[Callable[..., Any]] = None
    teacher: bool = False  # the train state keeps the starting parameters, frozen, as teacher_params
    check_config: Optional[Callable[[Any], None]] = None  # further refusals of an ExperimentConfig

    def train_step(self, cfg, tx, *, mesh=None):
        """The pure ``(state, batch) -> (state, metrics)`` step of a run of this task."""
        if self.make_step is not None:
            return self.make_step(cfg.model, cfg.train, tx, mesh=mesh)
        return family_of(cfg.model).make_train_step(cfg.model, cfg.train, tx, mesh=mesh)

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
        if self.check_config is not None:
            self.check_config(cfg)

    def check_start(self, cfg) -> None:
        """Refuse to start a run that this task cannot start (called before training)."""
        if self.needs_init_from and not cfg.train.init_from:
            raise InputError(f"{self.description or 'task ' + repr(self.name)} fine-tunes a trained model: set "
                             "train.init_from (a training workdir, a model directory, a released name such as 'base', "
                             "or a .pt/.npz file)")


_TASKS: Registry[Task] = Registry("training task")
BUILTIN_TASK_MODULES = ("glide_jax.train.distill",)  # tasks registered by modules above this one
_builtins_loaded = False


def _load_builtin_tasks() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_TASK_MODULES:
            importlib.import_module(module)


def register_task(task: Task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task, got {type(task).__name__}")
    return _TASKS.register(task.name, task)


def task_named(name: str) -> Task:
    _load_builtin_tasks()
    if name not in _TASKS:
        raise InputError(f"task must be one of {_TASKS.names()}, got {name!r}")
    return _TASKS.get(name)


def registered_tasks() -> List[Task]:
    _load_builtin_tasks()
    return _TASKS.values()


register_task(Task("base", "unet", ("base",), description="the text-to-image base model"))
register_task(Task("upsample", "unet", ("upsample",), description="the text-conditional upsampler"))
register_task(Task("inpaint", "unet", ("inpaint", "upsample-inpaint"), start=warm_start.inpaint_params,
                   needs_init_from=True, description="inpainting"))
register_task(Task("clip", "clip", description="the noise-aware CLIP of CLIP guidance"))
