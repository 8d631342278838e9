"""Inpainting fine-tune of the tiny base model (``--set train.init_from=<base_tiny workdir>``)."""

import dataclasses

from experiments.configs import base_tiny


def get_config():
    cfg = base_tiny.get_config()
    return dataclasses.replace(
        cfg,
        task="inpaint",
        name="inpaint_tiny",
        model=dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, inpaint=True)),
        train=dataclasses.replace(cfg.train, steps=500, lr=3e-4, warmup_steps=50, checkpoint_every=250),
    )
