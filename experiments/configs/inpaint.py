"""GLIDE's inpainting base model: a trained base model fine-tuned with four more input channels, by size.

    python -m experiments.train --config experiments/configs/inpaint.py:tiny --workdir runs/inpaint_tiny \\
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

from experiments.configs import _common as common
from experiments.configs import base
from glide_jax.train.experiment import ExperimentConfig

VARIANTS = ("micro", "tiny", "released")


def get_config(variant: str) -> ExperimentConfig:
    """The inpainting fine-tune of one size; ``variant`` is one of ``VARIANTS``."""
    return common.pick({"micro": _micro, "tiny": _tiny, "released": _released}, variant, "inpaint")


def _from_base(variant: str, **train_changes) -> ExperimentConfig:
    """The base run ``variant`` with the mask inputs, as task ``inpaint``, with ``train_changes``."""
    cfg = base.get_config(variant)
    unet = dataclasses.replace(cfg.model.unet, inpaint=True)  # reads the masked image and the mask too
    return dataclasses.replace(
        cfg,
        task="inpaint",  # trained by experiments/train.py (alias experiments/train_inpaint.py)
        name=f"inpaint_{variant}",  # recorded in the workdir's experiment.json
        model=dataclasses.replace(cfg.model, unet=unet),  # the base network with four more input channels
        train=dataclasses.replace(cfg.train, **train_changes),  # the base schedule with these changes
    )


def _micro() -> ExperimentConfig:
    return _from_base(
        "micro",
        steps=4,  # optimiser steps of the fine-tune
        checkpoint_every=2,  # steps between checkpoints
    )


def _tiny() -> ExperimentConfig:
    return _from_base(
        "tiny",
        steps=500,  # optimiser steps of the fine-tune
        lr=3e-4,  # Adam learning rate after warmup, below the base's
        warmup_steps=50,  # linear learning-rate warmup
        checkpoint_every=250,  # steps between checkpoints
    )


def _released() -> ExperimentConfig:
    # OpenAI's released base-inpaint architecture, from the released base weights
    return common.released_inpaint_variant(base.get_config("released"), name="inpaint_released")
