"""GLIDE's text-conditional base diffusion model (text to a 64x64 image in the paper), by size.

    python -m experiments.train_base --config experiments/configs/base.py:tiny --workdir runs/base_tiny

Variants:

* ``micro``: 16x16 on procedural captioned shapes, a dozen steps; every code path in seconds (tests, CI).
* ``tiny``: 32x32 on captioned shapes, 1.6M parameters; 1,000 steps at batch 16 take about
  12 minutes on a 2-core CPU and give flat scenes with solid blobs whose colour follows the
  prompt only sometimes (learning the text conditioning takes several thousand more steps).
* ``released``: the architecture of OpenAI's released (filtered) base model, 385M parameters,
  identical to the ``base`` preset, so OpenAI's converted weights can be fine-tuned with it
  and its checkpoints load into the sampling pipeline. Point ``data.path`` at a prepared
  dataset (``python -m tools.prepare_dataset``).
* ``paper``: the paper's 3.5B-parameter base model (Nichol et al. 2021, section 4): the
  released U-Net widened to 512 channels (2.3B) with a text transformer of 24 blocks of
  width 2048 (1.2B with its embeddings), bfloat16 compute, rematerialised residual blocks
  and parameters fully sharded over the pod.
* ``finetune``: fine-tuning OpenAI's released base (``train.init_from=base``) on a prepared
  image-caption dataset (``--set data.path=...``) on one accelerator: bfloat16 compute,
  rematerialised residual blocks, gradient accumulation, parameters and optimiser state
  sharded (fsdp) over the local devices when there are several, caption dropout for
  classifier-free guidance and a small learning rate after warmup. See docs/finetune.md
  for the commands and the memory each batch size needs.
* ``finetune_micro``: the ``finetune`` recipe on the ``micro`` network with the released
  models' tokenizer; ``train.init_from`` must name a model of that shape (tests, CI).

Neither the paper nor the release gives the learning rate; ``released`` and ``paper`` use
ADM's ImageNet-64 recipe (Adam 1e-4, EMA 0.9999).
"""

import dataclasses

from glide_jax.config import GLIDE_VOCAB, DiffusionConfig, ModelConfig, TextConfig, UNetConfig, get_preset
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

VARIANTS = ("micro", "tiny", "released", "paper", "finetune", "finetune_micro")


def get_config(variant: str) -> ExperimentConfig:
    """The base-model experiment of one size; ``variant`` is one of ``VARIANTS``."""
    builders = {"micro": _micro, "tiny": _tiny, "released": _released, "paper": _paper,
                "finetune": _finetune, "finetune_micro": _finetune_micro}
    if variant not in builders:
        raise ValueError(f"base config has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    return builders[variant]()


def _micro() -> ExperimentConfig:
    unet = UNetConfig(
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
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name="base_micro",  # recorded in the workdir's experiment.json
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=256,  # size of the training set
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="sentencepiece",  # learn a vocabulary into <workdir>/tokenizer.model on the first run
            tokenizer_captions=256,  # captions the vocabulary is learnt from
        ),
        train=TrainConfig(
            steps=12,  # optimiser steps
            batch_size=4,  # images per step, summed over hosts
            lr=1e-3,  # Adam learning rate after warmup
            warmup_steps=2,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average used for sampling
            grad_clip=1.0,  # global-norm gradient clipping
            log_every=2,  # steps between metric lines
            checkpoint_every=4,  # steps between checkpoints
            keep_last=2,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        sample=SampleConfig(
            num_images=2,  # images in a preview grid
            steps=3,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def _tiny() -> ExperimentConfig:
    unet = UNetConfig(
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
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        ),
    )
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name="base_tiny",  # recorded in the workdir's experiment.json
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=20000,  # size of the training set
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="sentencepiece",  # learn a vocabulary into <workdir>/tokenizer.model on the first run
        ),
        train=TrainConfig(
            steps=1000,  # optimiser steps
            batch_size=16,  # images per step, summed over hosts
            lr=1e-3,  # Adam learning rate after warmup
            warmup_steps=100,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average used for sampling
            grad_clip=1.0,  # global-norm gradient clipping
            log_every=50,  # steps between metric lines
            checkpoint_every=500,  # steps between checkpoints
            keep_last=2,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=100,  # sampler steps of a preview
            sampler="ddpm",  # ancestral: after ~1,000 steps it draws objects where DDIM still shows noise
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def _released() -> ExperimentConfig:
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name="base_released",  # recorded in the workdir's experiment.json
        model=get_preset("base"),  # OpenAI's released base: 64x64, 192 channels, text 16 x 512, 385M
        data=DataConfig(
            source="tfds",  # a prepared image-caption dataset ...
            path="",  # ... at this folder: --set data.path=<.../name/config/1.0.0>
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="glide-bpe",  # the released models' GPT-2 BPE
        ),
        train=TrainConfig(
            steps=2_500_000,  # optimiser steps
            batch_size=256,  # images per step, summed over hosts
            lr=1e-4,  # Adam learning rate after warmup
            warmup_steps=1000,  # linear learning-rate warmup
            ema_rate=0.9999,  # decay of the parameter average used for sampling
            log_every=100,  # steps between metric lines
            checkpoint_every=5000,  # steps between checkpoints
            keep_last=3,  # newest checkpoints kept ...
            keep_every=100_000,  # ... plus every multiple of this step
            sample_every=10_000,  # steps between preview grids
        ),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),  # pure data parallelism over all devices
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddim",  # deterministic DDIM
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def _paper() -> ExperimentConfig:
    released = _released()
    unet = dataclasses.replace(
        released.model.unet,
        num_channels=512,  # the ADM U-Net widened to 512 channels (2.3B parameters)
        text=TextConfig(text_ctx=128, width=2048, layers=24, heads=32),  # 24 blocks of width 2048 (1.2B)
        dtype="bfloat16",  # compute dtype; parameters stay float32
        remat=True,  # recompute residual blocks in the backward pass instead of storing activations
    )
    return dataclasses.replace(
        released,
        name="base_paper",  # recorded in the workdir's experiment.json
        model=dataclasses.replace(released.model, unet=unet),  # the released model with the widths above
        train=dataclasses.replace(
            released.train,
            batch_size=2048,  # the paper's batch
            steps=2_500_000,  # the paper's iterations
        ),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # parameters and optimiser state sharded over all chips
    )


def _finetune_model(model: ModelConfig, **text_changes) -> ModelConfig:
    """``model`` computing in bfloat16 with rematerialised residual blocks: the same weights (a warm
    start may change both), about half the activation memory (see docs/finetune.md)."""
    unet = dataclasses.replace(
        model.unet,
        dtype="bfloat16",  # compute dtype; parameters, gradients and Adam moments stay float32
        remat=True,  # recompute residual blocks in the backward pass instead of storing activations
        text=dataclasses.replace(model.unet.text, **text_changes),
    )
    return dataclasses.replace(model, unet=unet)


def _finetune() -> ExperimentConfig:
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name="base_finetune",  # recorded in the workdir's experiment.json
        model=_finetune_model(get_preset("base")),  # the released base (385M) in bfloat16 with remat
        data=DataConfig(
            source="tfds",  # a prepared image-caption dataset ...
            path="",  # ... at this folder: --set data.path=<.../name/config/1.0.0> (64x64 images)
            caption_dropout=0.2,  # share of empty captions: keeps the unconditional branch of guidance trained
            tokenizer="glide-bpe",  # the released model's GPT-2 BPE (its token embedding is reused)
        ),
        train=TrainConfig(
            init_from="base",  # OpenAI's released base, converted on first use (glide-jax download base)
            steps=10_000,  # optimiser steps
            batch_size=32,  # images per step, summed over devices
            microbatches=8,  # gradient accumulation: 8 slices of 4 images (15.3 GiB per device, docs/finetune.md)
            lr=1e-5,  # Adam learning rate after warmup: a tenth of the from-scratch rate
            warmup_steps=500,  # linear learning-rate warmup from 0
            ema_rate=0.999,  # decay of the parameter average sampled with (a ~1,000-step horizon)
            grad_clip=1.0,  # global-norm gradient clipping
            log_every=50,  # steps between metric lines
            checkpoint_every=1000,  # steps between checkpoints
            keep_last=3,  # newest checkpoints kept
            sample_every=1000,  # steps between preview grids
        ),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # parameters, optimiser state and batch split over all devices
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddim",  # deterministic DDIM
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )


def _finetune_micro() -> ExperimentConfig:
    recipe = _finetune()
    return dataclasses.replace(
        recipe,
        name="base_finetune_micro",  # recorded in the workdir's experiment.json
        model=_finetune_model(_micro().model, n_vocab=GLIDE_VOCAB),  # micro network, GPT-2 BPE token ids
        data=dataclasses.replace(recipe.data, path=""),  # --set data.path=<a prepared 16x16 dataset>
        train=dataclasses.replace(
            recipe.train,
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
        sample=dataclasses.replace(recipe.sample, num_images=2, steps=3),  # small previews if asked for
    )
