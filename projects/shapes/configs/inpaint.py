"""The embedded inpainting model: the shipped base fine-tuned with four more input channels.

    python -m experiments.train_inpaint --config projects/shapes/configs/inpaint.py --workdir runs/shapes/inpaint

As in GLIDE, the inpainting model starts from the trained base model (here
relation stage 3 at step 1,250, its workdir ``runs/shapes/base_three_relations``);
the new input channels (masked image and mask) start at zero, so step 0
computes what the base computes, and random box, blob and stroke erasures
(``glide_jax.data.masks``) teach it to fill holes consistently with the caption
and the kept pixels. It keeps the base's relations: "to the right of" in
training scenes undoes the base's left-right routing within a few hundred
steps, and the model directory's prompt rewrite says such captions with "to
the left of" anyway.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig


def get_config() -> ExperimentConfig:
    """The one fine-tune of the embedded inpainting model."""
    unet = UNetConfig(
        image_size=32,  # side of the generated images, pixels
        num_channels=32,  # channels of the first U-Net level
        num_res_blocks=1,  # residual blocks per level
        channel_mult=(1, 2, 2),  # width multiplier per level: 32 -> 16 -> 8
        attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
        num_head_channels=16,  # channels per attention head
        inpaint=True,  # also reads the masked image and the mask (four more input channels)
        text=TextConfig(
            text_ctx=16,  # caption tokens
            width=64,  # text transformer width
            layers=2,  # text transformer blocks
            heads=4,  # text attention heads
            n_vocab=128,  # sentencepiece pieces (the base's vocabulary, inherited)
        ),
    )
    return ExperimentConfig(
        task="inpaint",  # trained by experiments/train_inpaint.py
        name="inpaint",  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand, with random erasures
            num_examples=1_000_000,  # training indices: a stream that never repeats within the run
            two_object_fraction=0.75,  # share of scenes that are a related pair
            pair_layout="free",  # a pair's objects anywhere that satisfies the relation
            relations=("above", "below", "to the left of"),  # the base's relations
            seed=0,  # shuffle order and per-example randomness (captions dropped, masks)
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="sentencepiece",  # replaced by the base's vocabulary (a fine-tune keeps it)
            tokenizer_captions=4000,  # captions a new vocabulary would be learnt from
        ),
        train=TrainConfig(
            seed=0,  # per-step randomness
            steps=800,  # optimiser steps of the fine-tune
            batch_size=32,  # images per step
            lr=3e-4,  # Adam learning rate after warmup, constant
            warmup_steps=50,  # linear learning-rate warmup
            grad_clip=1.0,  # global-norm gradient clipping
            ema_rate=0.995,  # decay of the parameter average that is sampled and exported
            ema_warmup=True,  # decay min(rate, (1 + step) / (10 + step))
            init_from="runs/shapes/base_three_relations",  # the shipped base's workdir, at step 1,250
            log_every=50,  # steps between metric lines
            checkpoint_every=200,  # steps between checkpoints
            keep_last=3,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),  # data parallelism over the local devices
        sample=SampleConfig(
            num_images=8,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=3.0,  # classifier-free guidance scale
        ),
    )
