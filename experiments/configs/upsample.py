"""GLIDE's text-conditional upsampler (64x64 to 256x256 in the paper), by size.

    python -m experiments.train_upsample --config experiments/configs/upsample.py:tiny --workdir runs/up_tiny

Variants:

* ``micro``: 8x8 to 32x32 on procedural captioned shapes, six steps; every code path in seconds.
* ``tiny``: 16x16 to 64x64 on captioned shapes, 1.6M parameters.
* ``released``: the architecture of OpenAI's released upsampler, 398M parameters, linear
  noise schedule (the ``upsample`` preset).
* ``paper``: the paper's 1.5B-parameter upsampler. The paper gives its size and its smaller
  text encoder (width 1024 instead of 2048), not the full architecture; here the released
  upsampler is widened to 384 channels, which gives 1.64B parameters.
* ``finetune``: fine-tuning OpenAI's released upsampler (``train.init_from=upsample``) on a
  prepared dataset of 256x256 images (the 64x64 inputs are their area averages) on one
  accelerator: bfloat16 compute, rematerialised residual blocks, gradient accumulation,
  fsdp over the local devices when there are several, caption dropout and a small learning
  rate after warmup. See docs/finetune.md.
* ``finetune_micro``: the ``finetune`` recipe on the ``micro`` network with the released
  models' tokenizer; ``train.init_from`` must name a model of that shape (tests, CI).
"""

import dataclasses

from glide_jax.config import GLIDE_VOCAB, DiffusionConfig, ModelConfig, TextConfig, UNetConfig, get_preset
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

VARIANTS = ("micro", "tiny", "released", "paper", "finetune", "finetune_micro")


def get_config(variant: str) -> ExperimentConfig:
    """The upsampler experiment of one size; ``variant`` is one of ``VARIANTS``."""
    builders = {"micro": _micro, "tiny": _tiny, "released": _released, "paper": _paper,
                "finetune": _finetune, "finetune_micro": _finetune_micro}
    if variant not in builders:
        raise ValueError(f"upsample config has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    return builders[variant]()


def _micro() -> ExperimentConfig:
    unet = UNetConfig(
        image_size=32,  # side of the output images, pixels
        num_channels=32,  # channels of the first U-Net level
        num_res_blocks=1,  # residual blocks per level
        channel_mult=(1, 2),  # width multiplier per level: 32 -> 16
        attention_resolutions=(16,),  # feature-map sides with self-attention (and attention to the text)
        num_head_channels=16,  # channels per attention head
        super_res=True,  # also reads the low-resolution image, enlarged (three more input channels)
        text=TextConfig(
            text_ctx=12,  # caption tokens
            width=32,  # text transformer width
            layers=1,  # text transformer blocks
            heads=2,  # text attention heads
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        ),
    )
    return ExperimentConfig(
        task="upsample",  # trained by experiments/train_upsample.py
        name="upsample_micro",  # recorded in the workdir's experiment.json
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="linear"),  # 1,000 steps of the linear schedule, as GLIDE's
            low_res_size=8,  # side of the input image
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=256,  # size of the training set
            caption_dropout=0.2,  # share of empty captions
            tokenizer="sentencepiece",  # learn a vocabulary into <workdir>/tokenizer.model on the first run
            tokenizer_captions=256,  # captions the vocabulary is learnt from
        ),
        train=TrainConfig(
            steps=6,  # optimiser steps
            batch_size=4,  # images per step, summed over hosts
            lr=1e-3,  # Adam learning rate after warmup
            warmup_steps=2,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average used for sampling
            log_every=2,  # steps between metric lines
            checkpoint_every=3,  # steps between checkpoints
            keep_last=2,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        sample=SampleConfig(
            num_images=2,  # images in a preview grid
            steps=3,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=1.0,  # no classifier-free guidance
        ),
    )


def _tiny() -> ExperimentConfig:
    unet = UNetConfig(
        image_size=64,  # side of the output images, pixels
        num_channels=32,  # channels of the first U-Net level
        num_res_blocks=1,  # residual blocks per level
        channel_mult=(1, 1, 2, 2),  # width multiplier per level: 64 -> 32 -> 16 -> 8
        attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
        num_head_channels=16,  # channels per attention head
        super_res=True,  # also reads the low-resolution image, enlarged (three more input channels)
        text=TextConfig(
            text_ctx=16,  # caption tokens
            width=32,  # text transformer width
            layers=1,  # text transformer blocks
            heads=2,  # text attention heads
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        ),
    )
    return ExperimentConfig(
        task="upsample",  # trained by experiments/train_upsample.py
        name="upsample_tiny",  # recorded in the workdir's experiment.json
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="linear"),  # 1,000 steps of the linear schedule, as GLIDE's
            low_res_size=16,  # side of the input image
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=20000,  # size of the training set
            caption_dropout=0.2,  # share of empty captions
            tokenizer="sentencepiece",  # learn a vocabulary into <workdir>/tokenizer.model on the first run
        ),
        train=TrainConfig(
            steps=1000,  # optimiser steps
            batch_size=16,  # images per step, summed over hosts
            lr=1e-3,  # Adam learning rate after warmup
            warmup_steps=100,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average used for sampling
            log_every=50,  # steps between metric lines
            checkpoint_every=500,  # steps between checkpoints
            keep_last=2,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        sample=SampleConfig(
            num_images=4,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=1.0,  # no classifier-free guidance
        ),
    )


def _released() -> ExperimentConfig:
    return ExperimentConfig(
        task="upsample",  # trained by experiments/train_upsample.py
        name="upsample_released",  # recorded in the workdir's experiment.json
        model=get_preset("upsample"),  # OpenAI's released upsampler: 64 -> 256, linear schedule, 398M
        data=DataConfig(
            source="tfds",  # a prepared image-caption dataset ...
            path="",  # ... at this folder: --set data.path=<.../name/config/1.0.0>
            caption_dropout=0.2,  # share of empty captions
            tokenizer="glide-bpe",  # the released models' GPT-2 BPE
        ),
        train=TrainConfig(
            steps=1_600_000,  # optimiser steps
            batch_size=64,  # images per step, summed over hosts
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
            num_images=4,  # images in a preview grid
            steps=27,  # sampler steps of a preview
            sampler="ddim",  # deterministic DDIM
            guidance_scale=1.0,  # no classifier-free guidance
            temperature=0.997,  # initial-noise scale, as GLIDE samples its upsampler
        ),
    )


def _paper() -> ExperimentConfig:
    released = _released()
    unet = dataclasses.replace(
        released.model.unet,
        num_channels=384,  # the released upsampler widened to 384 channels
        text=TextConfig(text_ctx=128, width=1024, layers=24, heads=16),  # the paper's smaller text encoder
        dtype="bfloat16",  # compute dtype; parameters stay float32
        remat=True,  # recompute residual blocks in the backward pass instead of storing activations
    )
    return dataclasses.replace(
        released,
        name="upsample_paper",  # recorded in the workdir's experiment.json
        model=dataclasses.replace(released.model, unet=unet),  # the released model with the widths above
        train=dataclasses.replace(
            released.train,
            batch_size=512,  # the paper's batch
            steps=1_600_000,  # the paper's iterations
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
        task="upsample",  # trained by experiments/train_upsample.py
        name="upsample_finetune",  # recorded in the workdir's experiment.json
        model=_finetune_model(get_preset("upsample")),  # the released upsampler (398M) in bfloat16 with remat
        data=DataConfig(
            source="tfds",  # a prepared image-caption dataset ...
            path="",  # ... at this folder: --set data.path=<.../name/config/1.0.0> (256x256 images)
            caption_dropout=0.2,  # share of empty captions
            tokenizer="glide-bpe",  # the released model's GPT-2 BPE (its token embedding is reused)
        ),
        train=TrainConfig(
            init_from="upsample",  # OpenAI's released upsampler, converted on first use (glide-jax download upsample)
            steps=10_000,  # optimiser steps
            batch_size=16,  # images per step, summed over devices
            microbatches=16,  # gradient accumulation: 16 slices of 1 image (16.7 GiB per device, docs/finetune.md)
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
            num_images=4,  # images in a preview grid
            steps=27,  # sampler steps of a preview
            sampler="ddim",  # deterministic DDIM
            guidance_scale=1.0,  # no classifier-free guidance
            temperature=0.997,  # initial-noise scale, as GLIDE samples its upsampler
        ),
    )


def _finetune_micro() -> ExperimentConfig:
    recipe = _finetune()
    return dataclasses.replace(
        recipe,
        name="upsample_finetune_micro",  # recorded in the workdir's experiment.json
        model=_finetune_model(_micro().model, n_vocab=GLIDE_VOCAB),  # micro network, GPT-2 BPE token ids
        data=dataclasses.replace(recipe.data, path=""),  # --set data.path=<a prepared 32x32 dataset>
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
