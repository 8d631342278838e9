"""GLIDE's inpainting base model: a trained base model fine-tuned with four more input channels, by size.

    python -m experiments.train_inpaint --config experiments/configs/inpaint.py:tiny --workdir runs/inpaint_tiny \\
        --set train.init_from=runs/base_tiny

As in the paper, each variant is the base model of the same variant
(``experiments/configs/base.py``) with ``inpaint=True``: the masked image and
the mask enter the first convolution through zero-initialised weights, so the
fine-tune starts out computing what the base computes, and random box, blob
and stroke erasures (``glide_jax.data.masks``) teach it to fill the holes.
``train.init_from`` names the model to start from: a base run of the same
variant for ``micro`` and ``tiny`` (given on the command line), OpenAI's
released ``base`` for ``released`` (converted on first use; ``glide-jax
download base`` fetches it). A training workdir or a model directory works too.
"""

import dataclasses

from experiments.configs import base
from glide_jax.config import get_preset
from glide_jax.train.experiment import ExperimentConfig

VARIANTS = ("micro", "tiny", "released")


def get_config(variant: str) -> ExperimentConfig:
    """The inpainting fine-tune of one size; ``variant`` is one of ``VARIANTS``."""
    builders = {"micro": _micro, "tiny": _tiny, "released": _released}
    if variant not in builders:
        raise ValueError(f"inpaint config has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    return builders[variant]()


def _with_inpaint_channels(cfg: ExperimentConfig) -> ExperimentConfig:
    unet = dataclasses.replace(cfg.model.unet, inpaint=True)  # reads the masked image and the mask too
    return dataclasses.replace(cfg, task="inpaint", model=dataclasses.replace(cfg.model, unet=unet))


def _micro() -> ExperimentConfig:
    cfg = _with_inpaint_channels(base.get_config("micro"))
    return dataclasses.replace(
        cfg,
        name="inpaint_micro",  # recorded in the workdir's experiment.json
        train=dataclasses.replace(
            cfg.train,
            steps=4,  # optimiser steps of the fine-tune
            checkpoint_every=2,  # steps between checkpoints
        ),
    )


def _tiny() -> ExperimentConfig:
    cfg = _with_inpaint_channels(base.get_config("tiny"))
    return dataclasses.replace(
        cfg,
        name="inpaint_tiny",  # recorded in the workdir's experiment.json
        train=dataclasses.replace(
            cfg.train,
            steps=500,  # optimiser steps of the fine-tune
            lr=3e-4,  # Adam learning rate after warmup, below the base's
            warmup_steps=50,  # linear learning-rate warmup
            checkpoint_every=250,  # steps between checkpoints
        ),
    )


def _released() -> ExperimentConfig:
    cfg = base.get_config("released")
    return dataclasses.replace(
        cfg,
        task="inpaint",  # trained by experiments/train_inpaint.py
        name="inpaint_released",  # recorded in the workdir's experiment.json
        model=get_preset("base-inpaint"),  # OpenAI's released base-inpaint architecture
        train=dataclasses.replace(
            cfg.train,
            init_from="base",  # start from OpenAI's released base weights
            steps=100_000,  # optimiser steps of the fine-tune
            lr=5e-5,  # Adam learning rate after warmup, half the base's
        ),
    )
