"""What the shipped models' configs share: the 32x32 base run, and the relation stages' table.

:func:`base_run` is the embedded base as pretrained (the architecture of
``experiments/configs/base.py:tiny`` on a practically unbounded stream of
procedural scenes); every config file of the project is it plus a few
differences: the relation stages (:func:`relation_stage`, one row each of
``RELATION_STAGES``), the upsampler, the inpainting fine-tune and the CLIP.
Nothing here imports ``experiments/``: these configs reproduce the shipped
models whatever the experiment families become.
"""

import dataclasses
from typing import Dict, Tuple

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.data.shapes import RELATIONS
from glide_jax.data.shapes_source import ShapesDataConfig
from glide_jax.errors import InputError
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

BASE_UNET = UNetConfig(
    image_size=32,  # side of the generated images, pixels
    num_channels=32,  # channels of the first U-Net level
    num_res_blocks=1,  # residual blocks per level
    channel_mult=(1, 2, 2),  # width multiplier per level: 32 -> 16 -> 8
    attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
    num_head_channels=16,  # channels per attention head
    text=TextConfig(
        text_ctx=16,  # caption tokens
        width=64,  # text transformer width
        layers=2,  # text transformer blocks
        heads=4,  # text attention heads
        n_vocab=128,  # sentencepiece pieces, learnt from the training captions (a warm start inherits them)
    ),
)
SCENES = DataConfig(
    source="shapes",  # procedural captioned shapes, rendered on demand
    shapes=ShapesDataConfig(
        num_examples=1_000_000,  # training indices: a stream that never repeats within the run
        two_object_fraction=0.5,  # share of scenes that are a related pair
        pair_layout="free",  # a pair's objects anywhere that satisfies the relation
        relations=RELATIONS,  # all four, in the library's order
    ),
    seed=0,  # shuffle order and per-example randomness (captions dropped, masks)
    caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
    tokenizer="sentencepiece",  # learnt into <workdir>/tokenizer.model on the first run, or init_from's
    tokenizer_captions=4000,  # captions a new vocabulary is learnt from
)
TRAIN = TrainConfig(
    seed=0,  # parameter init and per-step randomness
    batch_size=32,  # images per step
    lr=1e-3,  # Adam learning rate after warmup, constant (a larger train.steps extends a run)
    warmup_steps=100,  # linear learning-rate warmup
    grad_clip=1.0,  # global-norm gradient clipping
    ema_rate=0.999,  # decay of the parameter average that is sampled and exported
    log_every=50,  # steps between metric lines
    checkpoint_every=250,  # steps between checkpoints
    keep_last=3,  # newest checkpoints kept
    sample_every=0,  # preview grids only after the last step
)

# The relation curriculum of the embedded base after pretraining, one stage per config file (each
# file's docstring says why): stage -> (the relations of its pairs, the model it starts from, its
# phases in one workdir: variant -> (train.steps, data.shapes.two_object_fraction,
# train.high_noise_fraction)), in the order they run.
RELATION_STAGES: Dict[str, Tuple[Tuple[str, ...], str, Dict[str, Tuple[int, float, float]]]] = {
    "base_forward": (
        ("above", "to the left of"),  # the forward relations: the first noun phrase goes first
        "runs/shapes/base_pretrain_export/base",  # the pretrained base at step 10,000, float16 export
        {"to_1500": (1500, 0.75, 0.75),  # the mixed stream
         "to_3000": (3000, 1.0, 1.0),  # every scene a pair, every t from the noisy half
         "to_3500": (3500, 0.75, 0.75)}),  # the mixed stream again: the model stage 2 starts from
    "base_four_relations": (
        RELATIONS,  # all four, in the library's order
        "runs/shapes/base_forward",  # stage 1's workdir, at step 3,500
        {"to_2250": (2250, 1.0, 1.0),  # every scene a pair, every t from the noisy half
         "to_2750": (2750, 0.75, 0.75)}),  # the mixed stream: the model stage 3 starts from
    "base_three_relations": (
        ("above", "below", "to the left of"),  # the vertical pair both ways, the horizontal forward only
        "runs/shapes/base_four_relations_export/base",  # stage 2 at step 2,750, float16 export
        {"to_750": (750, 1.0, 1.0),  # every scene a pair, every t from the noisy half
         "to_1250": (1250, 0.75, 0.75)}),  # the mixed stream: the shipped base
}


def phase(phases: Dict[str, tuple], variant: str, stem: str) -> tuple:
    """``phases[variant]``, or a ``ValueError`` naming the config file's variants."""
    if variant not in phases:
        raise InputError(f"{stem} has no variant {variant!r}; its variants are {', '.join(phases)}")
    return phases[variant]


def with_shapes(data: DataConfig, **changes) -> DataConfig:
    """``data`` with ``changes`` to its scene mix (``data.shapes``)."""
    return dataclasses.replace(data, shapes=dataclasses.replace(data.shapes, **changes))


def base_run(name: str, steps: int) -> ExperimentConfig:
    """The embedded base's pretraining run, up to ``steps``; ``name`` is ``<config file stem>[:<variant>]``."""
    return ExperimentConfig(
        task="base",  # trained by experiments/train.py (alias experiments/train_base.py)
        name=name,  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            BASE_UNET,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=SCENES,  # the unbounded scene stream, all four relations
        train=dataclasses.replace(TRAIN, steps=steps),  # the step this run (or phase) ends at
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),  # data parallelism over the local devices
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def relation_stage(stem: str, variant: str) -> ExperimentConfig:
    """One phase of a relation stage (a row of ``RELATION_STAGES``): the base on its relations, each pair
    wholly in its halves, the objective tilted towards high noise, where a scene's layout is decided."""
    relations, init_from, phases = RELATION_STAGES[stem]
    steps, two_object_fraction, high_noise_fraction = phase(phases, variant, stem)
    cfg = base_run(f"{stem}:{variant}", steps)
    return dataclasses.replace(
        cfg,
        data=with_shapes(
            cfg.data,
            two_object_fraction=two_object_fraction,  # share of scenes that are a related pair
            pair_layout="halves",  # each object of a pair wholly in its half of the relation's axis
            relations=relations,  # the stage's relations
        ),
        train=dataclasses.replace(
            cfg.train,
            ema_warmup=True,  # decay min(rate, (1 + step) / (10 + step))
            mse_weighting="truncated_snr",  # the eps MSE weighted by min(max(1, 1/SNR), cap)
            mse_weight_clip=50.0,  # that cap
            high_noise_fraction=high_noise_fraction,  # share of each batch with t from the noisy part of the chain
            high_noise_from=0.5,  # that part: [0.5 T, T)
            init_from=init_from,  # the model the stage starts from
        ),
    )
