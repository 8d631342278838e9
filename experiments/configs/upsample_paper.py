"""GLIDE's 1.5B-parameter upsampler as described in the paper (64 -> 256, batch 512, 1.6M iterations).

The paper gives its size and its smaller text encoder (width 1024 instead of
2048), not the full architecture; here the released upsampler is widened to
384 channels (1.64B parameters with the 24-block, width-1024 text transformer).
"""

import dataclasses

from experiments.configs import upsample_released
from glide_jax.config import TextConfig
from glide_jax.train.experiment import MeshConfig


def get_config():
    cfg = upsample_released.get_config()
    unet = dataclasses.replace(
        cfg.model.unet, num_channels=384, text=TextConfig(text_ctx=128, width=1024, layers=24, heads=16),
        dtype="bfloat16", remat=True,
    )
    return dataclasses.replace(
        cfg,
        name="upsample_paper",
        model=dataclasses.replace(cfg.model, unet=unet),
        train=dataclasses.replace(cfg.train, batch_size=512, steps=1_600_000),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
    )
