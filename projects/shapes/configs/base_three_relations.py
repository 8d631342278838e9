"""The embedded base, relation stage 3 (the shipped base): "above", "below" and "to the left of".

    python -m experiments.train_base --config projects/shapes/configs/base_three_relations.py:to_750 \\
        --workdir runs/shapes/base_three_relations      # then :to_1250, same workdir

Stage 2 learnt the exclusive-or for the vertical axis only and lost stage 1's
left-right routing. Here the vertical pair keeps its exclusive-or while the
horizontal axis gets only its forward relation, the first-order rule "the first
noun phrase goes left" that stage 1 learnt. "A to the right of B" is the same
scene as "B to the left of A": the model directory's ``sampling.json`` carries a
prompt rewrite that says such captions with the trained relation (see
``projects/shapes/restate.py``). Starts from stage 2 at step 2,750, as its
float16 export (``runs/shapes/base_four_relations_export/base``). Two phases in
one workdir: every scene a pair and every t from the noisy half to step 750,
then the mixed stream to step 1,250 to win back one-object captions.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig

# variant: (train.steps, data.two_object_fraction, train.high_noise_fraction)
PHASES = {
    "to_750": (750, 1.0, 1.0),  # every scene a pair, every t from the noisy half
    "to_1250": (1250, 0.75, 0.75),  # the mixed stream: the shipped base
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of relation stage 3; ``variant`` is one of ``VARIANTS``, run in that order."""
    if variant not in PHASES:
        raise ValueError(f"base_three_relations has no variant {variant!r}; its variants are {', '.join(VARIANTS)}")
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
        name=f"base_three_relations:{variant}",  # recorded in experiment.json; the export names the config file by it
        model=ModelConfig(
            unet,  # the network above
            DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2"),  # 1,000 steps of the cosine schedule
        ),
        data=DataConfig(
            source="shapes",  # procedural captioned shapes, rendered on demand
            num_examples=1_000_000,  # training indices: a stream that never repeats within the run
            two_object_fraction=two_object_fraction,  # share of scenes that are a related pair
            pair_layout="halves",  # each object of a pair wholly in its half of the relation's axis
            relations=("above", "below", "to the left of"),  # "to the right of" is restated, never trained
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
            init_from="runs/shapes/base_four_relations_export/base",  # stage 2 at step 2,750, float16 export
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
