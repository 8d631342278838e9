"""GLIDE's text-conditional upsampler (64x64 to 256x256 in the paper), by size.

    python -m experiments.train --config experiments/configs/upsample.py:tiny --workdir runs/up_tiny

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

``paper``, ``finetune`` and ``finetune_micro`` are derived from ``released`` and ``micro``
as for the base model (``experiments/configs/_common.py``; this model's numbers are its
rows of ``PAPER`` and ``FINETUNE`` there).
"""

import dataclasses

from experiments.configs import _common as common
from glide_jax.config import ModelConfig, get_preset
from glide_jax.train.experiment import ExperimentConfig

def _micro() -> ExperimentConfig:
    unet = dataclasses.replace(
        common.MICRO_UNET,
        image_size=32,  # side of the output images, pixels (levels 32 -> 16)
        attention_resolutions=(16,),  # feature-map sides with self-attention (and attention to the text)
        super_res=True,  # also reads the low-resolution image, enlarged (three more input channels)
    )
    cfg = common.micro_run(
        task="upsample",  # trained by experiments/train.py (alias experiments/train_upsample.py)
        name="upsample_micro",  # recorded in the workdir's experiment.json
        model=ModelConfig(unet, common.LINEAR, low_res_size=8),  # the network above, from 8x8 inputs
    )
    return dataclasses.replace(
        cfg,
        sample=dataclasses.replace(cfg.sample, guidance_scale=1.0),  # no classifier-free guidance
    )


def _tiny() -> ExperimentConfig:
    micro = _micro()
    unet = dataclasses.replace(
        micro.model.unet,
        image_size=64,  # side of the output images, pixels
        channel_mult=(1, 1, 2, 2),  # width multiplier per level: 64 -> 32 -> 16 -> 8
        attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
        text=dataclasses.replace(micro.model.unet.text, text_ctx=16),  # caption tokens
    )
    return dataclasses.replace(
        micro,
        name="upsample_tiny",  # recorded in the workdir's experiment.json
        model=dataclasses.replace(micro.model, unet=unet, low_res_size=16),  # the network above, 16 -> 64
        data=common.TINY_DATA,  # 20,000 procedural scenes
        train=common.TINY_TRAIN,  # 1,000 steps at batch 16
        sample=dataclasses.replace(micro.sample, num_images=4, steps=50),  # 4 images, 50 sampler steps
    )


def _released() -> ExperimentConfig:
    cfg = common.released_run(
        task="upsample",  # trained by experiments/train.py (alias experiments/train_upsample.py)
        name="upsample_released",  # recorded in the workdir's experiment.json
        model=get_preset("upsample"),  # OpenAI's released upsampler: 64 -> 256, linear schedule, 398M
        steps=1_600_000,  # optimiser steps
        batch_size=64,  # images per step, summed over hosts
    )
    return dataclasses.replace(
        cfg,
        sample=dataclasses.replace(
            cfg.sample,
            num_images=4,  # images in a preview grid
            steps=27,  # sampler steps of a preview
            guidance_scale=1.0,  # no classifier-free guidance
            temperature=0.997,  # initial-noise scale, as GLIDE samples its upsampler
        ),
    )


VARIANTS = ("micro", "tiny", "released", "paper", "finetune", "finetune_micro")


def get_config(variant: str) -> ExperimentConfig:
    """The upsampler experiment of one size; ``variant`` is one of ``VARIANTS`` (``paper``, ``finetune`` and
    ``finetune_micro`` derived from ``released`` and ``micro`` by ``_common.released_derived``)."""
    builders = {"micro": _micro, "tiny": _tiny, "released": _released}
    return common.pick(common.released_derived(builders), variant, "upsample")
