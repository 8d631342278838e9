"""The pieces the experiment config files share: run bases by scale, and the fine-tune recipe.

A config file builds each variant from one of these bases with a few
``dataclasses.replace`` overrides, so a variant reads as its differences:

* :func:`micro_run`: a network of seconds on procedural captioned shapes (tests, CI);
  ``TINY_DATA`` / ``TINY_TRAIN`` scale it to a CPU run of minutes.
* :func:`released_run`: an architecture of OpenAI's release on a prepared dataset,
  data parallel, ADM's ImageNet-64 recipe (the paper gives no learning rate).
* :func:`released_derived`: the variants a diffusion family derives from its
  ``released`` run in the same way, with that family's numbers from ``PAPER`` and
  ``FINETUNE``: ``paper`` (widened to the paper's size, sharded), ``finetune``
  (released weights fine-tuned on one accelerator) and ``finetune_micro`` (that
  recipe on the micro network).
* :func:`guidance_student` and ``DISTILL_MICRO``: the student network and settings of
  the distillation runs (``glide_jax.train.distill``); ``DISTILL_RELEASED``,
  ``DISTILL_TRAIN`` and ``PROGRESSIVE_ROUNDS`` are the released base's distillation
  recipe (docs/distillation.md).
* :func:`released_inpaint_variant`: a released run turned into GLIDE's inpainting
  fine-tune of the released weights.
"""

import dataclasses
from typing import Callable, Dict, Tuple

from glide_jax.config import GLIDE_VOCAB, DiffusionConfig, ModelConfig, TextConfig, UNetConfig, get_preset
from glide_jax.data.shapes_source import ShapesDataConfig
from glide_jax.errors import InputError
from glide_jax.train.experiment import DataConfig, DistillConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

COSINE = DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2")  # 1,000 steps of the cosine schedule
LINEAR = DiffusionConfig(steps=1000, noise_schedule="linear")  # 1,000 linear-schedule steps, as GLIDE's upsampler
DATA_PARALLEL = MeshConfig(data=-1, fsdp=1, tensor=1)  # pure data parallelism over all devices
FSDP = MeshConfig(data=1, fsdp=-1, tensor=1)  # parameters, optimiser state and batch split over all devices

MICRO_UNET = UNetConfig(
    image_size=16,  # side of the generated images, pixels
    num_channels=32,  # channels of the first U-Net level
    num_res_blocks=1,  # residual blocks per level
    channel_mult=(1, 2),  # width multiplier per level: 16 -> 8
    attention_resolutions=(8,),  # feature-map sides with self-attention (and attention to the text)
    num_head_channels=16,  # channels per attention head
    text=TextConfig(
        text_ctx=12,  # caption tokens
        width=32,  # text transformer width
        layers=1,  # text transformer blocks
        heads=2,  # text attention heads
        n_vocab=128,  # sentencepiece pieces, learnt from the training captions
    ),
)
MICRO_DATA = DataConfig(
    source="shapes",  # procedural captioned shapes, rendered on demand
    shapes=ShapesDataConfig(num_examples=256),  # size of the training set
    caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
    tokenizer="sentencepiece",  # learn a vocabulary into <workdir>/tokenizer.model on the first run
    tokenizer_captions=256,  # captions the vocabulary is learnt from
)
TINY_DATA = dataclasses.replace(
    MICRO_DATA,
    shapes=ShapesDataConfig(num_examples=20000),  # size of the training set
    tokenizer_captions=4000,  # captions the vocabulary is learnt from
)
MICRO_TRAIN = TrainConfig(
    steps=6,  # optimiser steps
    batch_size=4,  # images per step, summed over hosts
    lr=1e-3,  # Adam learning rate after warmup
    warmup_steps=2,  # linear learning-rate warmup
    ema_rate=0.995,  # decay of the parameter average used for sampling
    grad_clip=1.0,  # global-norm gradient clipping
    log_every=2,  # steps between metric lines
    checkpoint_every=3,  # steps between checkpoints
    keep_last=2,  # newest checkpoints kept
    sample_every=0,  # preview grids only after the last step
)
TINY_TRAIN = dataclasses.replace(
    MICRO_TRAIN,
    steps=1000,  # optimiser steps
    batch_size=16,  # images per step, summed over hosts
    warmup_steps=100,  # linear learning-rate warmup
    log_every=50,  # steps between metric lines
    checkpoint_every=500,  # steps between checkpoints
)
DISTILL_MICRO = DistillConfig(
    guidance_min=1.0,  # smallest guidance weight w drawn per example
    guidance_max=4.0,  # largest guidance weight w drawn per example
    teacher_steps=8,  # distill-progressive: the teacher's DDIM steps (a round's student takes half)
    student_steps=4,  # distill-progressive: the student's DDIM steps
)
DISTILL_RELEASED = DistillConfig(
    guidance_min=1.0,  # smallest guidance weight w drawn per example: the plain conditional model
    guidance_max=5.0,  # largest w: Meng et al.'s [0, 4] in their (1 + w) convention
    teacher_steps=64,  # distill-progressive: the first round's teacher, the guided student on 64 DDIM steps
    student_steps=32,  # distill-progressive: its student; each later round halves both
)
PROGRESSIVE_ROUNDS = (32, 16, 8, 4, 2, 1)  # student steps of the released base's progressive rounds, in order
RELEASED_DATA = DataConfig(
    source="tfds",  # a prepared image-caption dataset ...
    path="",  # ... at this folder: --set data.path=<.../name/config/1.0.0>
    caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
    tokenizer="glide-bpe",  # the released models' GPT-2 BPE
)
RELEASED_TRAIN = TrainConfig(
    lr=1e-4,  # Adam learning rate after warmup
    warmup_steps=1000,  # linear learning-rate warmup
    ema_rate=0.9999,  # decay of the parameter average used for sampling
    log_every=100,  # steps between metric lines
    checkpoint_every=5000,  # steps between checkpoints
    keep_last=3,  # newest checkpoints kept ...
    keep_every=100_000,  # ... plus every multiple of this step
    sample_every=10_000,  # steps between preview grids
)
FINETUNE_TRAIN = TrainConfig(
    steps=10_000,  # optimiser steps
    lr=1e-5,  # Adam learning rate after warmup: a tenth of the from-scratch rate
    warmup_steps=500,  # linear learning-rate warmup from 0
    ema_rate=0.999,  # decay of the parameter average sampled with (a ~1,000-step horizon)
    grad_clip=1.0,  # global-norm gradient clipping
    log_every=50,  # steps between metric lines
    checkpoint_every=1000,  # steps between checkpoints
    keep_last=3,  # newest checkpoints kept
    sample_every=1000,  # steps between preview grids
)
DISTILL_TRAIN = dataclasses.replace(
    FINETUNE_TRAIN,
    steps=20_000,  # optimiser steps of one round (docs/distillation.md: the papers used 50,000 at batch 2048)
    batch_size=32,  # images per step, summed over devices
    microbatches=8,  # gradient accumulation: 8 slices of 4 (the memory per slice: docs/distillation.md)
    lr=2e-5,  # Adam learning rate after warmup: a student starts at its teacher
    lr_schedule="cosine",  # to 0 at the last step, as the papers anneal each round to 0
    warmup_steps=250,  # linear learning-rate warmup from 0
    sample_every=-1,  # no preview grids (a variant that samples on the student's grid sets them)
)

# family -> the paper's model (Nichol et al. 2021, section 4): U-Net channels, text encoder, batch
PAPER: Dict[str, Tuple[int, TextConfig, int]] = {
    "base": (512, TextConfig(text_ctx=128, width=2048, layers=24, heads=32), 2048),  # 2.3B U-Net + 1.2B text encoder
    "upsample": (384, TextConfig(text_ctx=128, width=1024, layers=24, heads=16), 512),  # 1.64B; smaller text encoder
}
# family -> the single-accelerator fine-tune of its released weights: batch, microbatches (docs/finetune.md)
FINETUNE: Dict[str, Tuple[int, int]] = {
    "base": (32, 8),  # 8 slices of 4 64x64 images: 15.3 GiB per device
    "upsample": (16, 16),  # 16 slices of one 256x256 image: 16.7 GiB per device
}


def pick(builders: Dict[str, Callable[[], ExperimentConfig]], variant: str, family: str) -> ExperimentConfig:
    """``builders[variant]()``, or a ``ValueError`` naming the family's variants."""
    if variant not in builders:
        raise InputError(f"{family} config has no variant {variant!r}; its variants are {', '.join(builders)}")
    return builders[variant]()


def micro_run(task: str, name: str, model) -> ExperimentConfig:
    """A ``micro`` run of ``model``: 256 shapes scenes, a few steps at batch 4, two-image DDPM previews."""
    return ExperimentConfig(
        task=task,  # the training task: model family and how the run starts
        name=name,  # recorded in the workdir's experiment.json
        model=model,  # the network
        data=MICRO_DATA,  # 256 procedural scenes, vocabulary learnt from their captions
        train=MICRO_TRAIN,  # a few steps at batch 4
        sample=SampleConfig(
            num_images=2,  # images in a preview grid
            steps=3,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def released_run(task: str, name: str, model, steps: int, batch_size: int) -> ExperimentConfig:
    """A run of a released architecture on a prepared dataset, data parallel, with DDIM previews."""
    return ExperimentConfig(
        task=task,  # the training task: model family and how the run starts
        name=name,  # recorded in the workdir's experiment.json
        model=model,  # the released architecture
        data=RELEASED_DATA,  # a prepared dataset, GPT-2 BPE captions
        train=dataclasses.replace(
            RELEASED_TRAIN,
            steps=steps,  # optimiser steps
            batch_size=batch_size,  # images per step, summed over hosts
        ),
        mesh=DATA_PARALLEL,  # pure data parallelism over all devices
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddim",  # deterministic DDIM
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def guidance_student(model: ModelConfig) -> ModelConfig:
    """``model`` with a guidance-weight input (``unet.guidance_embed``): the student of guided distillation."""
    return dataclasses.replace(model, unet=dataclasses.replace(
        model.unet,
        guidance_embed=True,  # reads the guidance weight w through a zero-initialised MLP
    ))


def bfloat16_remat(model: ModelConfig, **unet_changes) -> ModelConfig:
    """``model`` computing in bfloat16 with rematerialised residual blocks (and ``unet_changes``): the
    same weights, about half the activation memory (see docs/finetune.md)."""
    unet = dataclasses.replace(
        model.unet,
        dtype="bfloat16",  # compute dtype; parameters, gradients and Adam moments stay float32
        remat=True,  # recompute residual blocks in the backward pass instead of storing activations
        **unet_changes,
    )
    return dataclasses.replace(model, unet=unet)


def paper_variant(released: ExperimentConfig) -> ExperimentConfig:
    """``released`` widened to the paper's size (``PAPER``), in bfloat16 with remat, sharded over all chips."""
    num_channels, text, batch_size = PAPER[released.task]
    return dataclasses.replace(
        released,
        name=released.name.replace("_released", "_paper"),  # recorded in the workdir's experiment.json
        model=bfloat16_remat(released.model, num_channels=num_channels, text=text),  # the paper's widths
        train=dataclasses.replace(released.train, batch_size=batch_size),  # the paper's batch, released steps
        mesh=FSDP,  # parameters and optimiser state sharded over all chips
    )


def finetune_variant(released: ExperimentConfig) -> ExperimentConfig:
    """Fine-tuning the released weights of ``released``'s architecture on one accelerator (``FINETUNE``):
    bfloat16 with remat, gradient accumulation, fsdp over the local devices."""
    batch_size, microbatches = FINETUNE[released.task]
    return dataclasses.replace(
        released,
        name=released.name.replace("_released", "_finetune"),  # recorded in the workdir's experiment.json
        model=bfloat16_remat(released.model),  # the released network in bfloat16 with remat
        train=dataclasses.replace(
            FINETUNE_TRAIN,
            init_from=released.task,  # the released model of that name, converted on first use (glide-jax download)
            batch_size=batch_size,  # images per step, summed over devices
            microbatches=microbatches,  # gradient accumulation (the memory per slice: docs/finetune.md)
        ),
        mesh=FSDP,  # parameters, optimiser state and batch split over all devices
    )


def finetune_micro_variant(finetune: ExperimentConfig, micro_model: ModelConfig) -> ExperimentConfig:
    """The ``finetune`` recipe on the micro network with the released tokenizer's ids; ``data.path``
    and ``train.init_from`` (a model of that shape) come from the command line."""
    text = dataclasses.replace(micro_model.unet.text, n_vocab=GLIDE_VOCAB)  # GPT-2 BPE token ids
    return dataclasses.replace(
        finetune,
        name=f"{finetune.name}_micro",  # recorded in the workdir's experiment.json
        model=bfloat16_remat(micro_model, text=text),  # the micro network as the recipe computes it
        train=dataclasses.replace(
            finetune.train,
            init_from="",  # --set train.init_from=<a micro model: model directory, workdir or .npz>
            steps=4,  # optimiser steps
            batch_size=4,  # images per step
            microbatches=2,  # gradient accumulation: 2 slices of 2 images
            lr=1e-4,  # large enough for 4 steps to move every parameter visibly
            warmup_steps=2,  # linear learning-rate warmup from 0
            log_every=2,  # steps between metric lines
            checkpoint_every=2,  # steps between checkpoints
            sample_every=-1,  # no preview grids
        ),
        sample=dataclasses.replace(finetune.sample, num_images=2, steps=3),  # small previews if asked for
    )


def released_derived(builders: Dict[str, Callable[[], ExperimentConfig]]) -> Dict[str, Callable[[], ExperimentConfig]]:
    """``builders`` (with ``micro`` and ``released``) and the variants derived from them: ``paper``,
    ``finetune`` and ``finetune_micro`` (the last two read ``data.path`` from the command line)."""
    return {**builders,
            "paper": lambda: paper_variant(builders["released"]()),
            "finetune": lambda: finetune_variant(builders["released"]()),
            "finetune_micro": lambda: finetune_micro_variant(finetune_variant(builders["released"]()),
                                                             builders["micro"]().model)}


def released_inpaint_variant(released: ExperimentConfig, name: str) -> ExperimentConfig:
    """``released`` as GLIDE's inpainting fine-tune: the released inpainting architecture of its kind
    (``base-inpaint``, ``upsample-inpaint``: four more input channels) started from the released
    weights of its task's name, 100,000 steps at half the learning rate."""
    return dataclasses.replace(
        released,
        task="inpaint",  # trained by experiments/train.py (alias experiments/train_inpaint.py)
        name=name,  # recorded in the workdir's experiment.json
        model=get_preset(f"{released.model.kind}-inpaint"),  # OpenAI's released inpainting architecture
        train=dataclasses.replace(
            released.train,
            init_from=released.task,  # OpenAI's released weights of that name, converted on first use
            steps=100_000,  # optimiser steps of the fine-tune
            lr=5e-5,  # Adam learning rate after warmup, half the from-scratch rate
        ),
    )
