"""The released GLIDE upsampler's architecture: 398M parameters, 64 -> 256, linear noise schedule."""

from glide_jax.config import get_preset
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="upsample",
        name="upsample_released",
        model=get_preset("upsample"),
        data=DataConfig(source="tfds", path="", caption_dropout=0.2, tokenizer="glide-bpe"),
        train=TrainConfig(steps=1_600_000, batch_size=64, lr=1e-4, warmup_steps=1000, ema_rate=0.9999,
                          log_every=100, checkpoint_every=5000, keep_last=3, keep_every=100_000, sample_every=10_000),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
        sample=SampleConfig(num_images=4, steps=27, sampler="ddim", guidance_scale=1.0, temperature=0.997),
    )
