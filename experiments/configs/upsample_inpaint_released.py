"""The released upsample-inpaint architecture, fine-tuned from the released upsampler."""

import dataclasses

from experiments.configs import upsample_released
from glide_jax.config import get_preset


def get_config():
    cfg = upsample_released.get_config()
    return dataclasses.replace(
        cfg,
        task="inpaint",
        name="upsample_inpaint_released",
        model=get_preset("upsample-inpaint"),
        train=dataclasses.replace(cfg.train, init_from="upsample", steps=100_000, lr=5e-5),
    )
