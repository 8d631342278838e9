"""The embedded inpainting model: the shipped base fine-tuned with four more input channels.

    python -m experiments.train --config projects/shapes/configs/inpaint.py --workdir runs/shapes/inpaint

As in GLIDE, the inpainting model starts from the trained base model (here
relation stage 3 at step 1,250, its workdir ``runs/shapes/base_three_relations``);
the new input channels (masked image and mask) start at zero, so step 0
computes what the base computes, and random box, blob and stroke erasures
(``glide_jax.data.masks``) teach it to fill holes consistently with the caption
and the kept pixels. It keeps the base's relations: "to the right of" in
training scenes undoes the base's left-right routing within a few hundred
steps, and the model directory's prompt rewrite says such captions with "to
the left of" anyway.
"""

import dataclasses

from glide_jax.config import ModelConfig
from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common


def get_config() -> ExperimentConfig:
    """The one fine-tune of the embedded inpainting model."""
    cfg = common.base_run("inpaint", steps=800)  # optimiser steps of the fine-tune
    unet = dataclasses.replace(common.BASE_UNET, inpaint=True)  # reads the masked image and the mask too
    return dataclasses.replace(
        cfg,
        task="inpaint",  # trained by experiments/train.py (alias experiments/train_inpaint.py)
        model=ModelConfig(unet, cfg.model.diffusion),  # the base network with four more input channels
        data=common.with_shapes(
            cfg.data,  # with random erasures (glide_jax.data.masks)
            two_object_fraction=0.75,  # share of scenes that are a related pair
            relations=("above", "below", "to the left of"),  # the base's relations
        ),
        train=dataclasses.replace(
            cfg.train,
            lr=3e-4,  # Adam learning rate after warmup, constant
            warmup_steps=50,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average that is sampled and exported
            ema_warmup=True,  # decay min(rate, (1 + step) / (10 + step))
            init_from="runs/shapes/base_three_relations",  # the shipped base's workdir, at step 1,250
            checkpoint_every=200,  # steps between checkpoints
        ),
    )
