"""The embedded upsampler: 32x32 to 64x64 captioned shapes, text-conditional like GLIDE's.

    python -m experiments.train --config projects/shapes/configs/upsample.py:to_750 \\
        --workdir runs/shapes/upsample      # then :to_1000, same workdir

A small super-resolution U-Net (32 base channels, attention only at 8x8, a
1-layer text transformer) that sharpens the embedded base's 32x32 samples.
Shapes are flat colour regions, so the task is mostly edge placement and needs
far less capacity than the base model. It learns its own vocabulary from the
training captions. Two phases in one workdir: a plain EMA to step 750, then the
EMA warm-up to step 1,000.
"""

import dataclasses

from glide_jax.config import DiffusionConfig, ModelConfig
from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common

# variant: (train.steps, train.ema_warmup)
PHASES = {
    "to_750": (750, False),  # plain EMA
    "to_1000": (1000, True),  # EMA warm-up: the shipped upsampler
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of the upsampler run; ``variant`` is one of ``VARIANTS``, run in that order."""
    steps, ema_warmup = common.phase(PHASES, variant, "upsample")
    unet = dataclasses.replace(
        common.BASE_UNET,
        image_size=64,  # side of the output images, pixels
        channel_mult=(1, 1, 2, 2),  # width multiplier per level: 64 -> 32 -> 16 -> 8
        attention_resolutions=(8,),  # feature-map sides with self-attention (and attention to the text)
        super_res=True,  # also reads the 32x32 image, enlarged (three more input channels)
        text=dataclasses.replace(
            common.BASE_UNET.text,
            width=32,  # text transformer width
            layers=1,  # text transformer blocks
            heads=2,  # text attention heads
        ),
    )
    cfg = common.base_run(f"upsample:{variant}", steps)
    return dataclasses.replace(
        cfg,
        task="upsample",  # trained by experiments/train.py (alias experiments/train_upsample.py)
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="linear"),  # 1,000 steps of the linear schedule, as GLIDE's
            low_res_size=32,  # side of the input image: the base's output
        ),
        train=dataclasses.replace(
            cfg.train,
            batch_size=16,  # images per step
            ema_rate=0.995,  # decay of the parameter average that is sampled and exported
            ema_warmup=ema_warmup,  # decay min(rate, (1 + step) / (10 + step)) when on
            keep_last=2,  # newest checkpoints kept
        ),
        sample=dataclasses.replace(
            cfg.sample,
            num_images=4,  # images in a preview grid
            guidance_scale=1.0,  # no classifier-free guidance
        ),
    )
