"""Tiny text-conditional upsampler on captioned shapes: 16x16 -> 64x64."""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, SampleConfig, TrainConfig

UNET = UNetConfig(
    image_size=64,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 1, 2, 2),
    attention_resolutions=(16, 8),
    num_head_channels=16,
    super_res=True,
    text=TextConfig(text_ctx=16, width=32, layers=1, heads=2, n_vocab=128),
)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="upsample",
        name="upsample_tiny",
        model=ModelConfig(UNET, DiffusionConfig(steps=1000, noise_schedule="linear"), low_res_size=16),
        data=DataConfig(source="shapes", num_examples=20000, caption_dropout=0.2, tokenizer="sentencepiece"),
        train=TrainConfig(steps=1000, batch_size=16, lr=1e-3, warmup_steps=100, ema_rate=0.995,
                          log_every=50, checkpoint_every=500, keep_last=2, sample_every=0),
        sample=SampleConfig(num_images=4, steps=50, sampler="ddpm", guidance_scale=1.0),
    )
