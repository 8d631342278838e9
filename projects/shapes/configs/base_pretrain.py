"""The embedded base, pretraining: a 32x32 text-to-image model of procedural captioned shapes.

    python -m experiments.train --config projects/shapes/configs/base_pretrain.py:to_1250 \\
        --workdir runs/shapes/base_pretrain
    python -m experiments.train --config projects/shapes/configs/base_pretrain.py:to_10000 \\
        --workdir runs/shapes/base_pretrain

The architecture of ``experiments/configs/base.py:tiny`` (a 1.6M-parameter
U-Net with a 2-layer text transformer over a 128-piece sentencepiece
vocabulary learnt from the captions), trained on a practically unbounded
stream of scenes (examples are rendered on demand, so a million indices cost
nothing) with all four relations. The two variants are the two phases of the
one run in one workdir: steps 0-1,250 with half the scenes pairs and a plain
EMA, then to step 10,000 with three scenes in four pairs (they carry the
relations) and the EMA warm-up, which keeps the average of a short run from
holding on to the random initialisation. The learning rate is constant, so
resuming with a larger ``train.steps`` extends the run.
"""

import dataclasses

from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common

# variant: (train.steps, data.shapes.two_object_fraction, train.ema_warmup)
PHASES = {
    "to_1250": (1250, 0.5, False),  # half the scenes pairs, plain EMA
    "to_10000": (10000, 0.75, True),  # three scenes in four pairs, EMA warm-up: the model stage 1 starts from
}
VARIANTS = tuple(PHASES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of the pretraining run; ``variant`` is one of ``VARIANTS``, run in that order."""
    steps, two_object_fraction, ema_warmup = common.phase(PHASES, variant, "base_pretrain")
    cfg = common.base_run(f"base_pretrain:{variant}", steps)
    return dataclasses.replace(
        cfg,
        data=common.with_shapes(cfg.data, two_object_fraction=two_object_fraction),  # share of pairs
        train=dataclasses.replace(
            cfg.train,
            warmup_steps=200,  # linear learning-rate warmup
            ema_warmup=ema_warmup,  # decay min(rate, (1 + step) / (10 + step)) when on
            mse_weighting="eps",  # GLIDE's plain noise MSE
            high_noise_fraction=0.0,  # every timestep uniform over the chain
        ),
    )
