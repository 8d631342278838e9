"""GLIDE's inpainting upsampler: a trained upsampler fine-tuned with four more input channels.

    python -m experiments.train_inpaint --config experiments/configs/upsample_inpaint.py:released \\
        --workdir runs/upsample_inpaint --set data.path=<prepared dataset>

Variant ``released``: the architecture of OpenAI's released upsample-inpaint
model, fine-tuned from the released upsampler (``train.init_from="upsample"``,
converted on first use) or from an upsampler run of ``upsample.py:released``.
"""

import dataclasses

from experiments.configs import upsample
from glide_jax.config import get_preset
from glide_jax.train.experiment import ExperimentConfig

VARIANTS = ("released",)


def get_config(variant: str) -> ExperimentConfig:
    """The upsampler's inpainting fine-tune; ``variant`` is one of ``VARIANTS``."""
    if variant not in VARIANTS:
        raise ValueError(f"upsample_inpaint config has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    cfg = upsample.get_config("released")
    return dataclasses.replace(
        cfg,
        task="inpaint",  # trained by experiments/train_inpaint.py
        name="upsample_inpaint_released",  # recorded in the workdir's experiment.json
        model=get_preset("upsample-inpaint"),  # OpenAI's released upsample-inpaint architecture
        train=dataclasses.replace(
            cfg.train,
            init_from="upsample",  # start from OpenAI's released upsampler weights
            steps=100_000,  # optimiser steps of the fine-tune
            lr=5e-5,  # Adam learning rate after warmup, half the upsampler's
        ),
    )
