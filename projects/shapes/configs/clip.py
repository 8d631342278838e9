"""The embedded noise-aware CLIP: 32x32 captioned shapes, for CLIP-guided sampling of the embedded base.

    python -m experiments.train --config projects/shapes/configs/clip.py --workdir runs/shapes/clip

The architecture of ``experiments/configs/clip.py:tiny`` (a ViT with 4x4
patches and a 2-block text transformer, both 64 wide) trained contrastively on
images noised at random timesteps of the base model's cosine schedule, like
GLIDE's noised CLIP. It learns its own vocabulary from the training captions.
"""

import dataclasses

from glide_jax.config import ClipConfig
from glide_jax.train.experiment import ExperimentConfig, SampleConfig
from projects.shapes.configs import _common as common


def get_config() -> ExperimentConfig:
    """The one run of the embedded CLIP."""
    cfg = common.base_run("clip", steps=1500)  # optimiser steps
    return dataclasses.replace(
        cfg,
        task="clip",  # trained by experiments/train.py (alias experiments/train_clip.py)
        model=ClipConfig(
            image_size=32,  # side of the images it embeds
            patch_size=4,  # side of the ViT's patches
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
            max_text_len=16,  # caption tokens
            n_embd=64,  # width of both towers and of the joint embedding
            n_head_state_text=16,  # channels per attention head, text tower
            n_head_text=4,  # attention heads, text tower
            n_xf_blocks_text=2,  # transformer blocks, text tower
            n_head_state_image=16,  # channels per attention head, image tower
            n_head_image=4,  # attention heads, image tower
            n_xf_blocks_image=2,  # transformer blocks, image tower
            logit_scale=1 / 0.07,  # CLIP's initial temperature (the released model ended at 100)
            beta_schedule="squaredcos_cap_v2",  # noise schedule of the timesteps: the base model's
            n_timesteps=1000,  # timesteps of that schedule
        ),
        data=dataclasses.replace(cfg.data, caption_dropout=0.0),  # every image keeps its caption (a contrastive pair)
        train=dataclasses.replace(
            cfg.train,
            batch_size=64,  # image-caption pairs per step (the contrastive loss compares all of them)
            lr=5e-4,  # AdamW learning rate after warmup, constant
            weight_decay=0.1,  # decoupled weight decay on matrices and kernels
            ema_rate=0.99,  # decay of the parameter average that guides sampling and is exported
            keep_last=2,  # newest checkpoints kept
            sample_every=-1,  # CLIP draws no preview grids
        ),
        sample=SampleConfig(),  # unused: no preview grids
    )
