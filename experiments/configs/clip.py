"""GLIDE's noise-aware CLIP (the image tower also sees the timestep), for CLIP-guided sampling, by size.

    python -m experiments.train --config experiments/configs/clip.py:tiny --workdir runs/clip_tiny

It is trained contrastively on images noised at random timesteps of the diffusion
model's schedule, so it can guide that model's noisy samples. Variants:

* ``micro``: 16x16, one block per tower, six steps; every code path in seconds (tests, CI).
* ``tiny``: 32x32 captioned shapes, a ViT with 4x4 patches and a 2-block text transformer,
  both 64 wide (0.29M parameters); guides the tiny base model.
* ``released``: the architecture of OpenAI's released noised CLIP (64x64 ViT with a
  timestep token, CLIP's BPE), 158M parameters.
"""

import dataclasses

from experiments.configs import _common as common
from glide_jax.config import ClipConfig, get_preset
from glide_jax.train.experiment import ExperimentConfig, SampleConfig

VARIANTS = ("micro", "tiny", "released")


def get_config(variant: str) -> ExperimentConfig:
    """The CLIP experiment of one size; ``variant`` is one of ``VARIANTS``."""
    return common.pick({"micro": _micro, "tiny": _tiny, "released": _released}, variant, "clip")


def _contrastive(cfg: ExperimentConfig, batch_size: int) -> ExperimentConfig:
    """``cfg`` as a CLIP run: every caption kept, AdamW, a shorter EMA, no preview grids."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, caption_dropout=0.0),  # every image keeps its caption (a contrastive pair)
        train=dataclasses.replace(
            cfg.train,
            batch_size=batch_size,  # image-caption pairs per step (the contrastive loss compares all of them)
            lr=5e-4,  # AdamW learning rate after warmup
            weight_decay=0.1,  # decoupled weight decay on matrices and kernels
            ema_rate=0.99,  # decay of the parameter average used for guidance
            sample_every=-1,  # CLIP draws no preview grids
        ),
        sample=SampleConfig(),  # unused: no preview grids
    )


def _micro() -> ExperimentConfig:
    model = ClipConfig(
        image_size=16,  # side of the images it embeds
        patch_size=4,  # side of the ViT's patches
        n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        max_text_len=12,  # caption tokens
        n_embd=32,  # width of both towers and of the joint embedding
        n_head_state_text=16,  # channels per attention head, text tower
        n_head_text=2,  # attention heads, text tower
        n_xf_blocks_text=1,  # transformer blocks, text tower
        n_head_state_image=16,  # channels per attention head, image tower
        n_head_image=2,  # attention heads, image tower
        n_xf_blocks_image=1,  # transformer blocks, image tower
        logit_scale=1 / 0.07,  # CLIP's initial temperature (the released model ended at 100)
        beta_schedule="squaredcos_cap_v2",  # noise schedule of the timesteps, the base model's
        n_timesteps=1000,  # timesteps of that schedule
    )
    cfg = common.micro_run(
        task="clip",  # trained by experiments/train.py (alias experiments/train_clip.py)
        name="clip_micro",  # recorded in the workdir's experiment.json
        model=model,  # the towers above
    )
    return _contrastive(cfg, batch_size=8)


def _tiny() -> ExperimentConfig:
    micro = _micro()
    model = dataclasses.replace(
        micro.model,
        image_size=32,  # side of the images it embeds
        max_text_len=16,  # caption tokens
        n_embd=64,  # width of both towers and of the joint embedding
        n_head_text=4,  # attention heads, text tower
        n_xf_blocks_text=2,  # transformer blocks, text tower
        n_head_image=4,  # attention heads, image tower
        n_xf_blocks_image=2,  # transformer blocks, image tower
    )
    cfg = dataclasses.replace(
        micro,
        name="clip_tiny",  # recorded in the workdir's experiment.json
        model=model,  # the towers above (0.29M parameters)
        data=common.TINY_DATA,  # 20,000 procedural scenes
        train=common.TINY_TRAIN,  # 1,000 steps
    )
    return _contrastive(cfg, batch_size=64)


def _released() -> ExperimentConfig:
    cfg = common.released_run(
        task="clip",  # trained by experiments/train.py (alias experiments/train_clip.py)
        name="clip_released",  # recorded in the workdir's experiment.json
        model=get_preset("clip"),  # OpenAI's released noised CLIP: 64x64 ViT, CLIP BPE, 158M
        steps=500_000,  # optimiser steps
        batch_size=1024,  # image-caption pairs per step
    )
    cfg = _contrastive(cfg, batch_size=1024)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, tokenizer="clip"),  # CLIP's BPE
        train=dataclasses.replace(
            cfg.train,
            warmup_steps=2000,  # linear learning-rate warmup
            weight_decay=0.2,  # decoupled weight decay on matrices and kernels (CLIP's)
            adam_b2=0.98,  # second-moment decay (CLIP's)
            adam_eps=1e-6,  # Adam's epsilon (CLIP's)
            ema_rate=0.9999,  # decay of the parameter average used for guidance
            keep_every=0,  # only the newest checkpoints are kept
        ),
    )
