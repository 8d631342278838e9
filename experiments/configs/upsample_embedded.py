"""The embedded default upsampler: 32x32 -> 64x64 captioned shapes, text-conditional like GLIDE's.

A small super-resolution U-Net (32 base channels, attention only at 8x8, a
1-layer text transformer) that sharpens the embedded base model's 32x32
samples. Shapes are flat colour regions, so the task is mostly edge
placement and needs far less capacity than the base model.
"""

import dataclasses

from experiments.configs import upsample_tiny


def get_config():
    cfg = upsample_tiny.get_config()
    unet = dataclasses.replace(cfg.model.unet, attention_resolutions=(8,))
    return dataclasses.replace(
        cfg,
        name="upsample_embedded",
        model=dataclasses.replace(cfg.model, unet=unet, low_res_size=32),
        data=dataclasses.replace(cfg.data, num_examples=1_000_000),
        train=dataclasses.replace(cfg.train, ema_warmup=True, checkpoint_every=250),
    )
