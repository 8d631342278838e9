"""Tiny base model on procedural captioned shapes at 32x32: trains on a laptop CPU in minutes.

A 1.6M-parameter U-Net (32 channels, attention at 16 and 8) with a 2-layer
text transformer over a 128-piece SentencePiece vocabulary learned from the
captions. 1000 steps at batch 16 take about 12 minutes on a shared 2-core
CPU and give flat scenes with solid blobs whose colour follows the prompt only
sometimes; learning the text conditioning takes several thousand more steps.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, SampleConfig, TrainConfig

TEXT = TextConfig(text_ctx=16, width=64, layers=2, heads=4, n_vocab=128)
UNET = UNetConfig(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2, 2),
    attention_resolutions=(16, 8),
    num_head_channels=16,
    text=TEXT,
)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="base",
        name="base_tiny",
        model=ModelConfig(UNET, DiffusionConfig(steps=1000, noise_schedule="squaredcos_cap_v2")),
        data=DataConfig(source="shapes", num_examples=20000, caption_dropout=0.2, tokenizer="sentencepiece"),
        train=TrainConfig(steps=1000, batch_size=16, lr=1e-3, warmup_steps=100, ema_rate=0.995, grad_clip=1.0,
                          log_every=50, checkpoint_every=500, keep_last=2, sample_every=0),
        # Ancestral sampling: after ~1000 steps it gives recognisable objects where DDIM still shows noise.
        sample=SampleConfig(num_images=8, steps=100, sampler="ddpm", guidance_scale=3.0),
    )
