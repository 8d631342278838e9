"""The smallest inpainting fine-tune (tests and CI); ``train.init_from`` must name a base_micro run."""

import dataclasses

from experiments.configs import base_micro


def get_config():
    cfg = base_micro.get_config()
    return dataclasses.replace(
        cfg,
        task="inpaint",
        name="inpaint_micro",
        model=dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, inpaint=True)),
        train=dataclasses.replace(cfg.train, steps=4, checkpoint_every=2),
    )
