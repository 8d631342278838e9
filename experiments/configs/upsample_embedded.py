"""The embedded default upsampler: 32x32 -> 64x64 captioned shapes, text-conditional like GLIDE's.

A small super-resolution U-Net (32 base channels, attention only at 8x8, a
1-layer text transformer) that sharpens the embedded base model's 32x32
samples. Shapes are flat colour regions, so the task is mostly edge
placement and needs far less capacity than the base model.
"""

from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
from glide_jax.train.config import DataConfig, ExperimentConfig, SampleConfig, TrainConfig

UNET = UNetConfig(
    image_size=64,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 1, 2, 2),
    attention_resolutions=(8,),
    num_head_channels=16,
    super_res=True,
    text=TextConfig(text_ctx=16, width=32, layers=1, heads=2, n_vocab=128),
)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="upsample",
        name="upsample_embedded",
        model=ModelConfig(UNET, DiffusionConfig(steps=1000, noise_schedule="linear"), low_res_size=32),
        data=DataConfig(source="shapes", num_examples=1_000_000, caption_dropout=0.2, tokenizer="sentencepiece"),
        train=TrainConfig(steps=1000, batch_size=16, lr=1e-3, warmup_steps=100, ema_rate=0.995, ema_warmup=True,
                          log_every=50, checkpoint_every=250, keep_last=2, sample_every=0),
        sample=SampleConfig(num_images=4, steps=20, sampler="dpm++2m", guidance_scale=1.0),
    )
