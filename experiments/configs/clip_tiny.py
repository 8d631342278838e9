"""Tiny noise-aware CLIP on captioned shapes (32x32), for CLIP guidance of the tiny base model."""

from glide_jax.config import ClipConfig
from glide_jax.train.experiment import DataConfig, ExperimentConfig, TrainConfig

CLIP = ClipConfig(
    image_size=32, patch_size=4, n_vocab=128, max_text_len=16, n_embd=64,
    n_head_state_text=16, n_head_text=4, n_xf_blocks_text=2,
    n_head_state_image=16, n_head_image=4, n_xf_blocks_image=2,
    logit_scale=1 / 0.07,  # CLIP's initial temperature; the released model ended at 100
    beta_schedule="squaredcos_cap_v2", n_timesteps=1000,
)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="clip",
        name="clip_tiny",
        model=CLIP,
        data=DataConfig(source="shapes", num_examples=20000, caption_dropout=0.0, tokenizer="sentencepiece"),
        train=TrainConfig(steps=1000, batch_size=64, lr=5e-4, warmup_steps=100, weight_decay=0.1, ema_rate=0.99,
                          log_every=50, checkpoint_every=500, keep_last=2, sample_every=-1),
    )
