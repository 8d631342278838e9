"""The released (filtered) GLIDE base model's architecture: 385M parameters, 64x64, GPT-2 BPE text.

Identical to the ``base`` preset, so its checkpoints load into the sampling
pipeline and OpenAI's converted weights can be fine-tuned with it. Point
``data.path`` at a prepared dataset (``python -m tools.prepare_dataset``).
"""

from glide_jax.config import get_preset
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, SampleConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="base",
        name="base_released",
        model=get_preset("base"),
        data=DataConfig(source="tfds", path="", caption_dropout=0.2, tokenizer="glide-bpe"),
        # ADM's ImageNet-64 recipe (Adam 1e-4, EMA 0.9999); GLIDE does not publish its own.
        train=TrainConfig(steps=2_500_000, batch_size=256, lr=1e-4, warmup_steps=1000, ema_rate=0.9999,
                          log_every=100, checkpoint_every=5000, keep_last=3, keep_every=100_000, sample_every=10_000),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
        sample=SampleConfig(num_images=8, steps=50, sampler="ddim", guidance_scale=3.0),
    )
