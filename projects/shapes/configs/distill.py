"""The embedded fast base (``embedded-fast``): the shipped base distilled to a few steps.

    python -m experiments.train --config projects/shapes/configs/distill.py:guidance \\
        --workdir runs/shapes/distill_guidance
    python -m experiments.train --config projects/shapes/configs/distill.py:to_8 \\
        --workdir runs/shapes/distill_8      # then :to_4 in runs/shapes/distill_4, and so on

Two kinds of run (``glide_jax.train.distill``), each its own workdir:

* ``guidance``: guided distillation (Meng et al. 2023). The student is the
  shipped base plus an input for the guidance weight w (zero-initialised, so it
  starts as the teacher's conditional model) and learns, in one evaluation,
  what classifier-free guidance computes from two, for w uniform in
  ``[DISTILL.guidance_min, guidance_max]``.
* ``to_<n>``: one round of progressive distillation (Salimans & Ho 2022): a
  student of ``n`` deterministic DDIM steps learns what the previous round (its
  teacher, ``2n`` steps) does in two. The first round's teacher is the
  guidance-distilled student at 16 steps. The grids span the first ``CHAIN``
  timesteps (``trailingN:875``, top t = 874): the shipped base samples from
  its canvas noised to t ~ 850, and the students do the same from the grid's
  top, never meeting t = 999, where their eps output cannot carry the long
  jump (the package's ``distill_*`` rounds over the whole chain, measured in
  the project README, are ``--set train.distill.chain=0``).

The images noised for the targets come from the stream the shipped base's last
phase trained on (the three relations, three pairs in four); every caption is
kept (the unconditional branch is the teacher's, with the empty caption).
"""

import dataclasses
from typing import Dict, Tuple

from glide_jax.config import ModelConfig
from glide_jax.train.experiment import DistillConfig, ExperimentConfig
from projects.shapes.configs import _common as common

SHIPPED_BASE = "embedded-base"  # the teacher of guided distillation: the package's base model
DISTILL = DistillConfig(
    guidance_min=1.0,  # smallest guidance weight w drawn per example (1: the conditional model)
    guidance_max=5.0,  # largest w drawn per example (the shipped base samples at 3)
    teacher_steps=16,  # overridden per round below
    student_steps=8,  # overridden per round below
    chain=875,  # the rounds' grids span timesteps 0..874 (trailingN:875)
)
# The progressive rounds, in the order they run: variant -> (student steps, optimiser steps, the teacher's
# workdir). Each round's teacher is the previous round's workdir (its EMA weights).
ROUNDS: Dict[str, Tuple[int, int, str]] = {
    "to_8": (8, 400, "runs/shapes/distill_guidance"),  # 16 -> 8 DDIM steps
    "to_4": (4, 400, "runs/shapes/distill_8"),  # 8 -> 4
    "to_2": (2, 400, "runs/shapes/distill_4"),  # 4 -> 2
    "to_1": (1, 400, "runs/shapes/distill_2"),  # 2 -> 1
}
GUIDANCE_STEPS = 1000  # optimiser steps of guided distillation
VARIANTS = ("guidance",) + tuple(ROUNDS)  # in the order they run


def _student(model: ModelConfig) -> ModelConfig:
    return dataclasses.replace(model, unet=dataclasses.replace(model.unet, guidance_embed=True))


def _guidance() -> ExperimentConfig:
    last_phase = common.relation_stage("base_three_relations", "to_1250")  # the data the shipped base ended on
    return dataclasses.replace(
        last_phase,
        task="distill-guidance",  # the student learns the teacher's guided output
        name="distill:guidance",  # recorded in experiment.json
        model=_student(last_phase.model),  # the shipped base's network plus the guidance-weight input
        data=dataclasses.replace(
            last_phase.data,
            caption_dropout=0.0,  # every caption kept: the unconditional branch is the teacher's
        ),
        train=dataclasses.replace(
            last_phase.train,
            init_from=SHIPPED_BASE,  # the teacher, and the student's start
            steps=GUIDANCE_STEPS,  # optimiser steps
            lr=2e-4,  # Adam learning rate after warmup: the student starts at its teacher
            warmup_steps=50,  # linear learning-rate warmup
            ema_rate=0.995,  # decay of the parameter average that is sampled and exported (short runs)
            ema_warmup=True,  # decay min(rate, (1 + step) / (10 + step))
            mse_weighting="eps",  # unweighted eps error (the distillation tasks weight their own losses)
            high_noise_fraction=0.0,  # t uniform over the whole chain
            checkpoint_every=100,  # steps between checkpoints
            distill=DISTILL,  # the w range
        ),
    )


def _round(variant: str) -> ExperimentConfig:
    student_steps, steps, teacher = common.phase(ROUNDS, variant, "distill")
    guided = _guidance()
    return dataclasses.replace(
        guided,
        task="distill-progressive",  # one round halving the DDIM steps
        name=f"distill:{variant}",  # recorded in experiment.json
        train=dataclasses.replace(
            guided.train,
            init_from=teacher,  # the previous round: the teacher, and the student's start
            steps=steps,  # optimiser steps of this round
            mse_weight_clip=5.0,  # cap of the round's truncated-SNR weight max(1, 1/SNR) of the eps error
            distill=dataclasses.replace(DISTILL, teacher_steps=2 * student_steps, student_steps=student_steps),
        ),
    )


def get_config(variant: str) -> ExperimentConfig:
    """One distillation run; ``variant`` is one of ``VARIANTS``, run in that order, each in its own workdir."""
    if variant == "guidance":
        return _guidance()
    return _round(variant)
