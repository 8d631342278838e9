"""The configuration of one training run, its command-line overrides and its JSON form.

An experiment is a frozen ``ExperimentConfig``: what to train (``task`` and
``model``), on what (``data``), how (``train``), on which device layout
(``mesh``) and how to preview it (``sample``). Config files in
``experiments/configs/`` return one from ``get_config(variant)`` (named on the command line as
``path.py:variant``); the command line
edits it with ``--set train.lr=1e-4 model.unet.dtype=bfloat16``, each value
parsed according to the type of the field it replaces, so a typo in a key or a
value of the wrong type fails before anything runs. The JSON form
(``glide_jax.config.config_to_dict``; read back with
``config_from_dict(d, ExperimentConfig)``) is stored in every checkpoint, which
makes a workdir self-describing: resuming and loading for sampling need nothing
but the workdir.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
import importlib.util
import inspect
from pathlib import Path
import sys
import typing
from typing import Any, Dict, Sequence, Tuple, Union

from glide_jax.config import MOVED_FIELDS, ClipConfig, ModelConfig
from glide_jax.config_checks import check_counts, check_fraction
from glide_jax.data import sources
from glide_jax.data.shapes_source import ShapesDataConfig
from glide_jax.diffusion.losses import MSE_WEIGHTINGS
from glide_jax.diffusion.sampler_registry import sampler_names
from glide_jax.errors import InputError
from glide_jax.evaluation.preprocess import RESIZE_MODES
from glide_jax.family import family_of
from glide_jax.train.tasks import task_named


@dataclass(frozen=True)
class DataConfig:
    """Where the captioned images come from and how captions become tokens.

    ``source`` names a registered reader (:mod:`glide_jax.data.sources`); the
    fields here are those every source understands, and a source with settings
    of its own reads them from its section (``shapes``).
    """

    source: str = "shapes"  # a registered source: "shapes" (rendered on demand) or "tfds" (prepared, at `path`)
    path: str = ""  # file-backed sources ("tfds"): folder of a prepared dataset version (.../name/config/1.0.0)
    split: str = "train"  # split to read ("shapes": "train" or "heldout")
    seed: int = 0  # shuffle order and per-example randomness (caption dropout, masks)
    caption_dropout: float = 0.2  # fraction of empty captions (the unconditional branch of guidance)
    # "sentencepiece": learned from the training captions into <workdir>/tokenizer.model on the first run;
    # "sentencepiece:<file>", "glide-bpe" (the released models' GPT-2 BPE) or "clip" (CLIP's BPE).
    tokenizer: str = "sentencepiece"
    tokenizer_captions: int = 4000  # captions read to learn a sentencepiece vocabulary
    worker_count: int = 0  # grain worker processes
    shapes: ShapesDataConfig = field(default_factory=ShapesDataConfig)  # "shapes": the procedural scene mix

    def __post_init__(self):
        check_counts("data", tokenizer_captions=self.tokenizer_captions)
        check_counts("data", 0, worker_count=self.worker_count)
        check_fraction("data", caption_dropout=self.caption_dropout)
        sources.check_sections(self)


@dataclass(frozen=True)
class DistillConfig:
    """Settings of the distillation tasks (``distill-guidance``, ``distill-progressive``; glide_jax.train.distill)."""

    guidance_min: float = 1.0  # smallest guidance weight w drawn per example (uniformly)
    guidance_max: float = 4.0  # largest guidance weight w drawn per example
    teacher_steps: int = 8  # distill-progressive: DDIM steps of the teacher (trailing spacing)
    student_steps: int = 4  # distill-progressive: steps of the student, half the teacher's (checked at the start)
    chain: int = 0  # distill-progressive: timesteps the grids span (trailingN:chain; 0 = the whole diffusion)

    def __post_init__(self):
        check_counts("train.distill", teacher_steps=self.teacher_steps, student_steps=self.student_steps)
        if isinstance(self.chain, bool) or not isinstance(self.chain, int) or self.chain < 0:
            raise InputError(f"train.distill.chain must be a whole number >= 0 (0: the whole chain), got {self.chain!r}")
        for name in ("guidance_min", "guidance_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InputError(f"train.distill.{name} must be a number >= 0, got {value!r}")
        if self.guidance_min > self.guidance_max:
            raise InputError(f"train.distill.guidance_min {self.guidance_min} exceeds guidance_max "
                             f"{self.guidance_max}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing schedule."""

    seed: int = 0  # parameter init and the per-step randomness fold_in(key(seed), step)
    steps: int = 1000  # total optimiser steps of the run (a resumed run continues to this step)
    batch_size: int = 32  # global, summed over hosts
    microbatches: int = 1  # gradient accumulation: the batch is processed in this many slices
    lr: float = 1e-4  # peak learning rate
    lr_schedule: str = "constant"  # "constant" or "cosine" (to 0 at `steps`), both after linear warmup
    warmup_steps: int = 0  # steps of linear warmup from 0 to `lr`
    weight_decay: float = 0.0  # decoupled (AdamW); applied to matrices and kernels only
    adam_b1: float = 0.9  # Adam's first-moment decay
    adam_b2: float = 0.999  # Adam's second-moment decay
    adam_eps: float = 1e-8  # Adam's denominator epsilon
    grad_clip: float = 1.0  # global-norm clipping; 0 disables it
    ema_rate: float = 0.9999  # decay of the parameters' moving average (the weights sampled with)
    ema_warmup: bool = False  # decay min(ema_rate, (1 + step) / (10 + step)): short runs forget the init
    loss_type: str = "mse"  # "mse" or "rescaled_mse" (hybrid loss weighting, see diffusion.losses)
    mse_weighting: str = "eps"  # "eps" (GLIDE), "truncated_snr" or "min_snr" (see diffusion.losses.mse_weights)
    mse_weight_clip: float = 5.0  # cap of truncated_snr's weight, gamma of min_snr
    high_noise_fraction: float = 0.0  # share of each batch with t drawn from [high_noise_from * T, T) (0: uniform)
    high_noise_from: float = 0.5  # fraction of the chain where that range starts
    init_from: str = ""  # model to start from (train.warm_start): a workdir, model dir, model name or .pt/.npz file
    log_every: int = 50  # steps between metric lines
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at the end)
    keep_last: int = 3  # checkpoints kept ...
    keep_every: int = 0  # ... plus every step that is a multiple of this (0: none)
    async_checkpoint: bool = True  # write checkpoints in the background while training goes on
    restart_if_corrupt: bool = False  # when every checkpoint is unreadable: set them aside and start again (else stop)
    sample_every: int = 0  # sample grids every N steps (0: only after the last step); -1 never
    distill: DistillConfig = field(default_factory=DistillConfig)  # the distillation tasks' settings

    def __post_init__(self):
        check_counts("train", steps=self.steps, batch_size=self.batch_size, microbatches=self.microbatches,
                     log_every=self.log_every, keep_last=self.keep_last)
        check_counts("train", 0, warmup_steps=self.warmup_steps, checkpoint_every=self.checkpoint_every,
                     keep_every=self.keep_every)
        check_counts("train", -1, sample_every=self.sample_every)
        check_fraction("train", ema_rate=self.ema_rate)
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InputError(f"train.{name} must be a number >= 0, got {value!r}")
        if self.batch_size % self.microbatches:
            raise InputError(f"batch_size {self.batch_size} is not divisible by microbatches {self.microbatches}")
        if self.mse_weighting not in MSE_WEIGHTINGS:
            raise InputError(f"train.mse_weighting must be one of {MSE_WEIGHTINGS}, got {self.mse_weighting!r}")
        if self.mse_weighting != "eps" and not self.mse_weight_clip > 0:
            raise InputError(f"train.mse_weight_clip must be positive, got {self.mse_weight_clip}")
        if not 0.0 <= self.high_noise_fraction <= 1.0:
            raise InputError(f"train.high_noise_fraction must be in [0, 1], got {self.high_noise_fraction}")
        if not 0.0 <= self.high_noise_from < 1.0:
            raise InputError(f"train.high_noise_from must be in [0, 1), got {self.high_noise_from}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"train.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one of them may be -1 (all remaining devices)."""

    data: int = -1  # replicas: each holds all parameters and sees its share of the batch
    fsdp: int = 1  # parameters, optimiser state and batch split together
    tensor: int = 1  # model-parallel matmuls (heads and MLP channels split)

    def __post_init__(self):
        check_counts("mesh", unset=-1, data=self.data, fsdp=self.fsdp, tensor=self.tensor)


@dataclass(frozen=True)
class SampleConfig:
    """Preview grids written during training (EMA parameters, classifier-free guidance)."""

    num_images: int = 4  # images per preview grid
    steps: int = 25  # sampling steps (respaced)
    sampler: str = "ddim"  # a registered sampler (glide_jax.diffusion.sampler_registry), e.g. ddpm, ddim, dpm++2m
    guidance_scale: float = 3.0  # classifier-free guidance scale
    prompts: Tuple[str, ...] = ()  # default: the captions of the first training records
    temperature: float = 1.0  # initial-noise scale (GLIDE's upsampler used 0.997)

    def __post_init__(self):
        check_counts("sample", num_images=self.num_images, steps=self.steps)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise InputError(f"sample.temperature must be a number > 0, got {self.temperature!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation: FID, CLIP score and per-image graders of EMA samples (glide_jax.evaluation).

    The samples go through the same code as ``glide-jax evaluate``; the figures are written to
    ``metrics.jsonl`` and TensorBoard as ``eval/...`` and the samples' files to ``eval/step_<N>/``.
    Text-to-image (base) models only. Settings that depend on each other (a reference needs the
    Inception; something must be measured) are checked when the run starts, after every ``--set``.
    """

    every: int = 0  # steps between evaluations, and one after the last step (0: never)
    num_samples: int = 64  # samples per evaluation (FID is biased below 2,048)
    captions: str = "shapes:heldout"  # caption spec (glide_jax.evaluation.captions): file, shards or shapes:...
    inception: str = ""  # pytorch-fid's Inception weights (.pth) for FID ("": no FID)
    reference: str = ""  # FID reference: pytorch-fid .npz, or reference images (their statistics cached)
    clip_model: str = ""  # Hugging Face CLIP folder for the CLIP score ("": none)
    scorers: Tuple[str, ...] = ()  # per-image graders as "module:function", e.g. projects.shapes.grading:score
    sampler: str = "ddim"  # a registered sampler (glide_jax.diffusion.sampler_registry)
    steps: int = 25  # sampling steps (respaced)
    guidance_scale: float = 3.0  # classifier-free guidance scale
    batch_size: int = 16  # samples drawn and scored at once
    resize: str = "pytorch-fid"  # the Inception's resize to 299: "pytorch-fid" (bilinear) or "clean" (bicubic)
    seed: int = 0  # sample i is drawn from fold_in(key(seed), i): the same noise at every evaluation

    def __post_init__(self):
        check_counts("eval", 0, every=self.every)
        check_counts("eval", num_samples=self.num_samples, steps=self.steps, batch_size=self.batch_size)
        check_counts("eval", 0, seed=self.seed)
        if self.sampler not in sampler_names():
            raise InputError(f"eval.sampler must be one of {', '.join(sampler_names())}, got {self.sampler!r}")
        if self.resize not in RESIZE_MODES:
            raise InputError(f"eval.resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if isinstance(self.guidance_scale, bool) or not isinstance(self.guidance_scale, (int, float)) \
                or not 0 <= self.guidance_scale <= 100:
            raise InputError(f"eval.guidance_scale must be a number in [0, 100], got {self.guidance_scale!r}")
        bad = [s for s in self.scorers if s.count(":") != 1]
        if bad:
            raise InputError(f"eval.scorers are written module:function, got {bad[0]!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run: what to train, on what, how, where, and its previews."""

    task: str  # a registered training task (glide_jax.train.tasks): what is trained and how it starts
    model: Union[ModelConfig, ClipConfig]  # the network being trained
    data: DataConfig = field(default_factory=DataConfig)  # its training data
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation and checkpoint schedule
    mesh: MeshConfig = field(default_factory=MeshConfig)  # device layout
    sample: SampleConfig = field(default_factory=SampleConfig)  # preview grids
    eval: EvalConfig = field(default_factory=EvalConfig)  # periodic FID / CLIP score of the EMA model
    name: str = ""  # the config's name (file stem or variant), shown in logs and experiment.json

    def __post_init__(self):
        task_named(self.task).check(self)
        family_of(self.model)  # a model of a registered family
        if getattr(self.model, "unet", None) is not None and self.model.unet.super_res and not self.model.low_res_size:
            raise InputError("a super-resolution model needs model.low_res_size")


# ----------------------------------------------------------------------------- overrides


def _tuple_item_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    return args[0] if args and args[0] in (str, int, float) else None


def _parse_like(current: Any, text: str, key: str, annotation: Any = None) -> Any:
    """Parse ``text`` as a value of the same type as ``current`` (tuples: the annotated item type)."""
    try:
        if isinstance(current, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise InputError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, tuple):
            text = text.strip()
            if not text:
                return ()
            if text.startswith(("(", "[")):
                return tuple(ast.literal_eval(text))
            items = [t.strip() for t in text.split(",")]
            item_type = _tuple_item_type(annotation) or (type(current[0]) if current else None)
            if item_type in (str, int, float):
                return tuple(item_type(t) for t in items)
            return tuple(ast.literal_eval(t) for t in items)
        if current is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
    except (ValueError, SyntaxError) as e:
        raise InputError(f"--set {key}: cannot parse {text!r} as {type(current).__name__}") from e
    raise InputError(f"--set {key}: the field holds a {type(current).__name__}; set its own fields instead")


def _replace_path(obj: Any, path: Sequence[str], text: str, key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise InputError(f"--set {key}: {'.'.join(path)} is below a plain value")
    moved = MOVED_FIELDS.get(type(obj).__name__, {}).get(path[0])
    if moved:  # an old name of a field that now lives in a section
        path = [*moved.split("."), *path[1:]]
    name = path[0]
    if name not in {f.name for f in dataclasses.fields(obj)}:
        known = ", ".join(f.name for f in dataclasses.fields(obj))
        raise InputError(f"--set {key}: {type(obj).__name__} has no field {name!r} (fields: {known})")
    current = getattr(obj, name)
    if len(path) > 1:
        value = _replace_path(current, path[1:], text, key)
    else:
        value = _parse_like(current, text, key, typing.get_type_hints(type(obj)).get(name))
    return dataclasses.replace(obj, **{name: value})


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Apply ``key=value`` strings such as ``train.lr=1e-4`` or ``model.unet.channel_mult=1,2``."""
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            cfg = _replace_path(cfg, key.strip().split("."), text, key)
        except ValueError as e:  # a value the config refuses: say which override it came from
            if str(e).startswith("--set"):
                raise
            raise InputError(f"--set {key.strip()}={text}: {e}") from None
    return cfg


def load_config_file(spec: Union[str, Path]) -> ExperimentConfig:
    """Run a config file and return its config: ``path.py`` calls ``get_config()``,
    ``path.py:variant`` calls ``get_config("variant")``.

    A family file (``experiments/configs/base.py``) lists its variants in a
    module-level ``VARIANTS`` tuple; a variant it does not list, or no variant
    for a ``get_config`` that needs one, fails with that list. The repository
    root (the folder holding ``experiments/``) is put on ``sys.path`` so that a
    config can import from the repository.
    """
    text = str(spec)
    head, colon, variant = text.rpartition(":")
    if colon and head.endswith(".py") and not any(c in variant for c in "/\\"):
        if not variant:
            raise InputError(f"config {text!r}: no variant after ':' (write path.py:<variant> or path.py)")
        path = Path(head).resolve()
    else:
        path, variant = Path(text).resolve(), None
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    for parent in path.parents:
        if (parent / "experiments" / "__init__.py").exists():
            if str(parent) not in sys.path:
                sys.path.insert(0, str(parent))
            break
    module_spec = importlib.util.spec_from_file_location(f"_glide_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise InputError(f"{path} defines no get_config()")
    variants = tuple(getattr(module, "VARIANTS", ()))
    listing = f": one of {', '.join(variants)} (write {path.name}:<variant>)" if variants else ""
    parameters = list(inspect.signature(get_config).parameters.values())
    needs_variant = any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                        for p in parameters)
    if variant is None:
        if needs_variant:
            raise InputError(f"{path} needs a variant{listing or ' (write path.py:<variant>)'}")
        cfg = get_config()
    else:
        if not parameters:
            raise InputError(f"{path} has no variants (its get_config() takes no argument); "
                             f"write {path.name} without ':{variant}'")
        if variants and variant not in variants:
            raise InputError(f"{path} has no variant {variant!r}; its variants are {', '.join(variants)}")
        cfg = get_config(variant)
    if not isinstance(cfg, ExperimentConfig):
        raise TypeError(f"{path}: get_config() returned {type(cfg).__name__}, expected ExperimentConfig")
    return cfg
