"""The embedded default base model: 32x32 captioned shapes, the package's offline text-to-image model.

Same architecture as ``base_tiny`` (a 1.6M-parameter U-Net with a 2-layer text
transformer over a 128-piece SentencePiece vocabulary), trained longer on a
practically unbounded stream of procedural scenes (examples are rendered on
demand, so a million indices cost nothing) so that it learns to bind colours
to shapes and to place two objects, which the held-out evaluation checks;
three scenes in four have two objects, since those carry the relations.
Constant learning rate with EMA, so a run can be extended by resuming with a
larger ``--set train.steps=...``. ``tools/export_embedded.py`` turns the
finished workdir into the package's assets.
"""

import dataclasses

from experiments.configs import base_tiny


def get_config():
    cfg = base_tiny.get_config()
    return dataclasses.replace(
        cfg,
        name="base_embedded",
        data=dataclasses.replace(cfg.data, num_examples=1_000_000, two_object_fraction=0.75),
        train=dataclasses.replace(cfg.train, steps=5000, batch_size=32, lr=1e-3, warmup_steps=200, ema_rate=0.999,
                                  ema_warmup=True, log_every=50, checkpoint_every=250, keep_last=3),
        sample=dataclasses.replace(cfg.sample, steps=50, sampler="ddpm", guidance_scale=3.0),
    )
