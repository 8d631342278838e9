"""The smallest upsampler run that exercises every code path (tests and CI): 8x8 -> 32x32."""

import dataclasses

from experiments.configs import upsample_tiny
from glide_jax.config import TextConfig


def get_config():
    cfg = upsample_tiny.get_config()
    unet = dataclasses.replace(
        cfg.model.unet, image_size=32, channel_mult=(1, 2), attention_resolutions=(16,),
        text=TextConfig(text_ctx=12, width=32, layers=1, heads=2, n_vocab=128),
    )
    return dataclasses.replace(
        cfg,
        name="upsample_micro",
        model=dataclasses.replace(cfg.model, unet=unet, low_res_size=8),
        data=dataclasses.replace(cfg.data, num_examples=256, tokenizer_captions=256),
        train=dataclasses.replace(cfg.train, steps=6, batch_size=4, warmup_steps=2, log_every=2, checkpoint_every=3),
        sample=dataclasses.replace(cfg.sample, num_images=2, steps=3),
    )
