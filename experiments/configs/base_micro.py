"""The smallest base run that exercises every code path (tests and CI): 16x16, a dozen steps."""

import dataclasses

from experiments.configs import base_tiny
from glide_jax.config import TextConfig


def get_config():
    cfg = base_tiny.get_config()
    unet = dataclasses.replace(
        cfg.model.unet, image_size=16, channel_mult=(1, 2), attention_resolutions=(8,),
        text=TextConfig(text_ctx=12, width=32, layers=1, heads=2, n_vocab=128),
    )
    return dataclasses.replace(
        cfg,
        name="base_micro",
        model=dataclasses.replace(cfg.model, unet=unet),
        data=dataclasses.replace(cfg.data, num_examples=256, tokenizer_captions=256),
        train=dataclasses.replace(cfg.train, steps=12, batch_size=4, warmup_steps=2, log_every=2, checkpoint_every=4,
                                  keep_last=2),
        sample=dataclasses.replace(cfg.sample, num_images=2, steps=3),
    )
