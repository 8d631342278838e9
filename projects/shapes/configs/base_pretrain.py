"""The embedded base, pretraining: a 32x32 text-to-image model of procedural captioned shapes.

    python -m experiments.train_base --config projects/shapes/configs/base_pretrain.py:to_1250 \\
        --workdir runs/shapes/base_pretrain
    python -m experiments.train_base --config projects/shapes/configs/base_pretrain.py:to_10000 \\
        --workdir runs/shapes/base_pretrain

The architecture of ``experiments/configs/base.py:tiny`` (a 1.6M-parameter
U-Net with a 2-layer text transformer over a 128-piece sentencepiece
vocabulary learnt from the captions), trained on a practically unbounded
stream of scenes (examples are rendered on demand, so a million indices cost
nothing) with all four relations. The two variants are the two phases of the
one run in one workdir: steps 0-1,250 with half the scenes pairs and a plain
EMA, then to step 10,000 with three scenes in four pairs (they carry the
relations) and the EMA warm-up, which keeps the average of a short run from
holding on to the random initialisation. The learning rate is constant, so
resuming with a larger ``train.steps`` extends the run.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

# variant: (train.steps, data.two_object_fraction, train.ema_warmup)
PHASES = {
    "to_1250": (1250, 0.5, False),  # half the scenes pairs, plain EMA
    "to_10000": (10000, 0.75, True),  # three scenes in four pairs, EMA warm-up: the model stage 1 starts from
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of the pretraining run; ``variant`` is one of ``VARIANTS``, run in that order."""
    if variant not in PHASES:
        raise ValueError(f"base_pretrain has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    steps, two_object_fraction, ema_warmup = PHASES[variant]
    unet = UNetConfig(
        image_size=32,  # side of the generated images, pixels
        num_channels=32,  # channels of the first U-Net level
        num_res_blocks=1,  # residual blocks per level
        channel_mult=(1, 2, 2),  # width multiplier per level: 32 -> 16 -> 8
        attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
        num_head_channels=16,  # channels per attention head
        text=TextConfig(
            text_ctx=16,  # caption tokens
            width=64,  # text transformer width
            layers=2,  # text transformer blocks
            heads=4,  # text attention heads
            n_vocab=128,  # sentencepiece pieces, learnt from the training captions
        ),
    )
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name=f"base_pretrain:{variant}",  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=1_000_000,  # training indices: a stream that never repeats within the run
            two_object_fraction=two_object_fraction,  # share of scenes that are a related pair
            pair_layout="free",  # a pair's objects anywhere that satisfies the relation
            relations=("to the left of", "to the right of", "above", "below"),  # all four, in the library's order
            seed=0,  # shuffle order and per-example randomness
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="sentencepiece",  # learn the vocabulary into <workdir>/tokenizer.model on the first run
            tokenizer_captions=4000,  # captions the vocabulary is learnt from
        ),
        train=TrainConfig(
            seed=0,  # parameter init and per-step randomness
            steps=steps,  # the step this phase ends at
            batch_size=32,  # images per step
            lr=1e-3,  # Adam learning rate after warmup, constant
            warmup_steps=200,  # linear learning-rate warmup
            grad_clip=1.0,  # global-norm gradient clipping
            ema_rate=0.999,  # decay of the parameter average that is sampled and exported
            ema_warmup=ema_warmup,  # decay min(rate, (1 + step) / (10 + step)) when on
            mse_weighting="eps",  # GLIDE's plain noise MSE
            high_noise_fraction=0.0,  # every timestep uniform over the chain
            log_every=50,  # steps between metric lines
            checkpoint_every=250,  # steps between checkpoints
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
