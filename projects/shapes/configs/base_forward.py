"""The embedded base, relation stage 1: "above" and "to the left of" only, each pair wholly in its halves.

    python -m experiments.train_base --config projects/shapes/configs/base_forward.py:to_1500 \\
        --workdir runs/shapes/base_forward      # then :to_3000, then :to_3500, same workdir

Why this stage: over all four relations the place of a noun phrase is the
exclusive-or of its position in the caption and the relation's direction ("A
above B" and "A below B" put A at opposite ends), so neither the word order nor
the relation word alone predicts where anything goes, and gradient descent has
no first-order signal to start from. With only the two "forward" relations the
first noun phrase always goes first (top or left) and the relation word only
picks the axis; that rule is learnt. Every pair is drawn with each object wholly
in its half of the relation's axis (``pair_layout="halves"``), a sharp target.

The objective is tilted towards high noise, where a scene's layout is decided:
part of each batch draws t from the upper half of the chain and the loss has
truncated-SNR weighting (cap 50). Starts from the pretrained base at step
10,000, as its float16 export (``runs/shapes/base_pretrain_export/base``,
written by ``python -m projects.shapes.export_embedded``; see the README).
Three phases in one workdir: the mixed stream to step 1,500, every scene a pair
and every t from the noisy half to step 3,000 (where the routing is learnt),
then the mixed stream again to step 3,500 to win back one-object captions.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

# variant: (train.steps, data.two_object_fraction, train.high_noise_fraction)
PHASES = {
    "to_1500": (1500, 0.75, 0.75),  # the mixed stream
    "to_3000": (3000, 1.0, 1.0),  # every scene a pair, every t from the noisy half
    "to_3500": (3500, 0.75, 0.75),  # the mixed stream again: the model stage 2 starts from
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of relation stage 1; ``variant`` is one of ``VARIANTS``, run in that order."""
    if variant not in PHASES:
        raise ValueError(f"base_forward has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
    steps, two_object_fraction, high_noise_fraction = PHASES[variant]
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
            n_vocab=128,  # sentencepiece pieces (the pretrained model's vocabulary, inherited)
        ),
    )
    return ExperimentConfig(
        task="base",  # trained by experiments/train_base.py
        name=f"base_forward:{variant}",  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=1_000_000,  # training indices: a stream that never repeats within the run
            two_object_fraction=two_object_fraction,  # share of scenes that are a related pair
            pair_layout="halves",  # each object of a pair wholly in its half of the relation's axis
            relations=("above", "to the left of"),  # the forward relations: the first noun phrase goes first
            seed=0,  # shuffle order and per-example randomness
            caption_dropout=0.2,  # share of empty captions (the unconditional branch of guidance)
            tokenizer="sentencepiece",  # replaced by the vocabulary of init_from (a warm start keeps it)
            tokenizer_captions=4000,  # captions a new vocabulary would be learnt from
        ),
        train=TrainConfig(
            seed=0,  # per-step randomness
            steps=steps,  # the step this phase ends at
            batch_size=32,  # images per step
            lr=1e-3,  # Adam learning rate after warmup, constant
            warmup_steps=100,  # linear learning-rate warmup
            grad_clip=1.0,  # global-norm gradient clipping
            ema_rate=0.999,  # decay of the parameter average that is sampled and exported
            ema_warmup=True,  # decay min(rate, (1 + step) / (10 + step))
            mse_weighting="truncated_snr",  # the eps MSE weighted by min(max(1, 1/SNR), cap)
            mse_weight_clip=50.0,  # that cap
            high_noise_fraction=high_noise_fraction,  # share of each batch with t from the noisy part of the chain
            high_noise_from=0.5,  # that part: [0.5 T, T)
            init_from="runs/shapes/base_pretrain_export/base",  # the pretrained base at step 10,000, float16 export
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
