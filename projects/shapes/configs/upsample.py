"""The embedded upsampler: 32x32 to 64x64 captioned shapes, text-conditional like GLIDE's.

    python -m experiments.train_upsample --config projects/shapes/configs/upsample.py:to_750 \\
        --workdir runs/shapes/upsample      # then :to_1000, same workdir

A small super-resolution U-Net (32 base channels, attention only at 8x8, a
1-layer text transformer) that sharpens the embedded base's 32x32 samples.
Shapes are flat colour regions, so the task is mostly edge placement and needs
far less capacity than the base model. It learns its own vocabulary from the
training captions. Two phases in one workdir: a plain EMA to step 750, then the
EMA warm-up to step 1,000.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

# variant: (train.steps, train.ema_warmup)
PHASES = {
    "to_750": (750, False),  # plain EMA
    "to_1000": (1000, True),  # EMA warm-up: the shipped upsampler
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of the upsampler run; ``variant`` is one of ``VARIANTS``, run in that order."""
    if variant not in PHASES:
        raise ValueError(f"upsample has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    steps, ema_warmup = PHASES[variant]
    unet = UNetConfig(
        image_size=64,  # side of the output images, pixels
        num_channels=32,  # channels of the first U-Net level
        num_res_blocks=1,  # residual blocks per level
        channel_mult=(1, 1, 2, 2),  # width multiplier per level: 64 -> 32 -> 16 -> 8
        attention_resolutions=(8,),  # feature-map sides with self-attention (and attention to the text)
        num_head_channels=16,  # channels per attention head
        super_res=True,  # also reads the 32x32 image, enlarged (three more input channels)
        text=TextConfig(
            text_ctx=16,  # caption tokens
            width=32,  # text transformer width
            layers=1,  # text transformer blocks
            heads=2,  # text attention heads
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        ),
    )
    return ExperimentConfig(
        task="upsample",  # trained by experiments/train_upsample.py
        name=f"upsample:{variant}",  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="linear"),  # 1,000 steps of the linear schedule, as GLIDE's
            low_res_size=32,  # side of the input image: the base's output
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=1_000_000,  # training indices: a stream that never repeats within the run
            two_object_fraction=0.5,  # share of scenes that are a related pair
            pair_layout="free",  # a pair's objects anywhere that satisfies the relation
            relations=("to the left of", "to the right of", "above", "below"),  # all four, in the library's order
            seed=0,  # shuffle order and per-example randomness
            caption_dropout=0.2,  # share of empty captions
            tokenizer="sentencepiece",  # learn the vocabulary into <workdir>/tokenizer.model on the first run
            tokenizer_captions=4000,  # captions the vocabulary is learnt from
        ),
        train=TrainConfig(
            seed=0,  # parameter init and per-step randomness
            steps=steps,  # the step this phase ends at
            batch_size=16,  # images per step
            lr=1e-3,  # Adam learning rate after warmup, constant
            warmup_steps=100,  # linear learning-rate warmup
            grad_clip=1.0,  # global-norm gradient clipping
            ema_rate=0.995,  # decay of the parameter average that is sampled and exported
            ema_warmup=ema_warmup,  # decay min(rate, (1 + step) / (10 + step)) when on
            log_every=50,  # steps between metric lines
            checkpoint_every=250,  # steps between checkpoints
            keep_last=2,  # newest checkpoints kept
            sample_every=0,  # preview grids only after the last step
        ),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),  # data parallelism over the local devices
        sample=SampleConfig(
            num_images=4,  # images in a preview grid
            steps=50,  # sampler steps of a preview
            sampler="ddpm",  # ancestral sampling
            guidance_scale=1.0,  # no classifier-free guidance
        ),
    )
