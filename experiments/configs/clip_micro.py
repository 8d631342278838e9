"""The smallest CLIP run (tests and CI)."""

import dataclasses

from experiments.configs import clip_tiny


def get_config():
    cfg = clip_tiny.get_config()
    model = dataclasses.replace(cfg.model, image_size=16, n_embd=32, n_head_text=2, n_head_image=2,
                                n_xf_blocks_text=1, n_xf_blocks_image=1, max_text_len=12)
    return dataclasses.replace(
        cfg,
        name="clip_micro",
        model=model,
        data=dataclasses.replace(cfg.data, num_examples=256, tokenizer_captions=256),
        train=dataclasses.replace(cfg.train, steps=6, batch_size=8, warmup_steps=2, log_every=2, checkpoint_every=3),
    )
