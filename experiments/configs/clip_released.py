"""The released noise-aware CLIP's architecture (64x64 ViT with timestep token, CLIP BPE text)."""

from glide_jax.config import get_preset
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="clip",
        name="clip_released",
        model=get_preset("clip"),
        data=DataConfig(source="tfds", path="", caption_dropout=0.0, tokenizer="clip"),
        train=TrainConfig(steps=500_000, batch_size=1024, lr=5e-4, warmup_steps=2000, weight_decay=0.2,
                          adam_b2=0.98, adam_eps=1e-6, ema_rate=0.9999, log_every=100, checkpoint_every=5000,
                          keep_last=3, sample_every=-1),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
    )
