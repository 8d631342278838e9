"""The embedded noise-aware CLIP: 32x32 captioned shapes, for CLIP-guided sampling of the embedded base.

Architecture of ``clip_tiny`` (ViT with 4x4 patches and a 2-block text
transformer, both 64 wide) trained contrastively on images noised at random
timesteps of the base model's cosine schedule, like GLIDE's noised CLIP.
"""

import dataclasses

from experiments.configs import clip_tiny


def get_config():
    cfg = clip_tiny.get_config()
    return dataclasses.replace(
        cfg,
        name="clip_embedded",
        data=dataclasses.replace(cfg.data, num_examples=1_000_000),
        train=dataclasses.replace(cfg.train, steps=1500, checkpoint_every=250, keep_last=2),
    )
