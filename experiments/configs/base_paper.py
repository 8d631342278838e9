"""GLIDE's 3.5B-parameter base model as described in the paper (Nichol et al. 2021, section 4).

The ADM 64x64 U-Net widened to 512 channels (2.3B) with a text transformer of
24 residual blocks of width 2048 (1.2B with its embeddings), trained for 2.5M
iterations at batch 2048. bfloat16 compute with rematerialised residual
blocks, parameters and optimiser state fully sharded over the pod (``fsdp``).
"""

import dataclasses

from experiments.configs import base_released
from glide_jax.config import TextConfig
from glide_jax.train.experiment import MeshConfig


def get_config():
    cfg = base_released.get_config()
    unet = dataclasses.replace(
        cfg.model.unet, num_channels=512, text=TextConfig(text_ctx=128, width=2048, layers=24, heads=32),
        dtype="bfloat16", remat=True,
    )
    return dataclasses.replace(
        cfg,
        name="base_paper",
        model=dataclasses.replace(cfg.model, unet=unet),
        train=dataclasses.replace(cfg.train, batch_size=2048, steps=2_500_000),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
    )
