"""A 16x16 base trained from scratch on two-object scenes only: a fast bench for relation learning.

The 32x32 embedded base takes an hour per 3,000 steps on two CPU cores, too slow
to compare remedies for its blindness to relation words. This config keeps
the architecture of ``base_tiny`` (32 channels, text transformer 2 x 64 over
16 tokens) at 16x16 with every scene a related pair, so a few thousand steps
show whether, and how fast, relations are learnt; the relation probe
(``python -m tools.eval_shapes --relation-probe --model WORKDIR``) is the measure.
Measured (session 5, stopped at 1,200 of 3,000 steps for time): relation probe
0.0006 at step 1,000, where the data's mean images differ by 0.22. Session 9,
batch 32 with every t from [500, 1000) and truncated SNR (cap 50): 0.0017 at
4,000 steps, and no onset with ``data.pair_layout=halves`` (6,000 steps) or
coordinate channels either (docs/training.md, "Session 9"). Session 10: with
the relations limited to "above" and "to the left of" (what ``data.relations`` now
sets) it was learnt within 2,500 steps, and the other two relations within 1,000 more (the curriculum of
``base_embedded_fwd`` / ``base_embedded_rel4``; docs/training.md, "Session 10").
"""

import dataclasses

from experiments.configs import base_tiny


def get_config():
    cfg = base_tiny.get_config()
    unet = dataclasses.replace(cfg.model.unet, image_size=16, channel_mult=(1, 2), attention_resolutions=(8,))
    return dataclasses.replace(
        cfg,
        name="relations_micro",
        model=dataclasses.replace(cfg.model, unet=unet),
        data=dataclasses.replace(cfg.data, num_examples=1_000_000, two_object_fraction=1.0),
        train=dataclasses.replace(cfg.train, steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, ema_rate=0.999,
                                  ema_warmup=True, log_every=100, checkpoint_every=500, keep_last=2, sample_every=-1),
        sample=dataclasses.replace(cfg.sample, steps=50, sampler="ddpm", guidance_scale=3.0),
    )
