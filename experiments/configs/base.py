"""GLIDE's text-conditional base diffusion model (text to a 64x64 image in the paper), by size.

    python -m experiments.train --config experiments/configs/base.py:tiny --workdir runs/base_tiny

Variants:

* ``micro``: 16x16 on procedural captioned shapes, a dozen steps; every code path in seconds (tests, CI).
* ``tiny``: 32x32 on captioned shapes, 1.6M parameters; 1,000 steps at batch 16 take about
  12 minutes on a 2-core CPU and give flat scenes with solid blobs whose colour follows the
  prompt only sometimes (learning the text conditioning takes several thousand more steps).
* ``released``: the architecture of OpenAI's released (filtered) base model, 385M parameters,
  identical to the ``base`` preset, so OpenAI's converted weights can be fine-tuned with it
  and its checkpoints load into the sampling pipeline. Point ``data.path`` at a prepared
  dataset (``python -m tools.prepare_dataset``).
* ``paper``: the paper's 3.5B-parameter base model (Nichol et al. 2021, section 4): the
  released U-Net widened to 512 channels (2.3B) with a text transformer of 24 blocks of
  width 2048 (1.2B with its embeddings), bfloat16 compute, rematerialised residual blocks
  and parameters fully sharded over the pod.
* ``finetune``: fine-tuning OpenAI's released base (``train.init_from=base``) on a prepared
  image-caption dataset (``--set data.path=...``) on one accelerator: bfloat16 compute,
  rematerialised residual blocks, gradient accumulation, parameters and optimiser state
  sharded (fsdp) over the local devices when there are several, caption dropout for
  classifier-free guidance and a small learning rate after warmup. See docs/finetune.md
  for the commands and the memory each batch size needs.
* ``finetune_micro``: the ``finetune`` recipe on the ``micro`` network with the released
  models' tokenizer; ``train.init_from`` must name a model of that shape (tests, CI).

* ``distill_guidance_micro``: guided distillation (Meng et al. 2023) of a ``micro`` base run
  (``--set train.init_from=<its workdir>``): the ``micro`` network with a guidance-weight input
  learns, in one evaluation, the teacher's classifier-free guided output for w in [1, 4].
* ``distill_progressive_micro``: one round of progressive distillation (Salimans & Ho 2022) of
  a guidance-distilled micro student (``train.init_from``: the previous round's workdir): 4 DDIM
  steps learn what the teacher does in 8; the next round sets ``train.distill.teacher_steps=4``
  and ``train.distill.student_steps=2``. See ``glide_jax.train.distill``.

* ``distill_guidance``: guided distillation of OpenAI's released base (``train.init_from=base``) on a
  prepared dataset (``--set data.path=...``) with the ``finetune`` recipe's compute (bfloat16, remat,
  8 microbatches of 4, fsdp): the released network with a guidance-weight input learns the teacher's
  guided output for w in [1, 5], 20,000 steps at a learning rate of 2e-5 decayed to 0.
* ``distill_progressive_32`` ... ``distill_progressive_1``: the rounds of progressive distillation that
  follow it, one variant per round named by the student's DDIM steps (the teacher takes twice as many):
  64 -> 32 -> 16 -> 8 -> 4, and on to 2 and 1; each round's ``train.init_from`` is the previous round's
  workdir (``--set``), the first one's the ``distill_guidance`` workdir. See docs/distillation.md for
  the commands, the memory and the papers' settings beside these.

``paper``, ``finetune`` and ``finetune_micro`` are derived from ``released`` and ``micro``
as for the upsampler (``experiments/configs/_common.py``; this model's numbers are its rows
of ``PAPER`` and ``FINETUNE`` there). Neither the paper nor the release gives the learning
rate; ``released`` and ``paper`` use ADM's ImageNet-64 recipe (Adam 1e-4, EMA 0.9999).
"""

import dataclasses

from experiments.configs import _common as common
from glide_jax.config import ModelConfig, get_preset
from glide_jax.train.experiment import ExperimentConfig

def _micro() -> ExperimentConfig:
    cfg = common.micro_run(
        task="base",  # trained by experiments/train.py (alias experiments/train_base.py)
        name="base_micro",  # recorded in the workdir's experiment.json
        model=ModelConfig(common.MICRO_UNET, common.COSINE),  # 16x16, 0.87M parameters, cosine schedule
    )
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            cfg.train,
            steps=12,  # optimiser steps
            checkpoint_every=4,  # steps between checkpoints
        ),
    )


def _tiny() -> ExperimentConfig:
    micro = _micro()
    unet = dataclasses.replace(
        micro.model.unet,
        image_size=32,  # side of the generated images, pixels
        channel_mult=(1, 2, 2),  # width multiplier per level: 32 -> 16 -> 8
        attention_resolutions=(16, 8),  # feature-map sides with self-attention (and attention to the text)
        text=dataclasses.replace(
            micro.model.unet.text,
            text_ctx=16,  # caption tokens
            width=64,  # text transformer width
            layers=2,  # text transformer blocks
            heads=4,  # text attention heads
        ),
    )
    return dataclasses.replace(
        micro,
        name="base_tiny",  # recorded in the workdir's experiment.json
        model=dataclasses.replace(micro.model, unet=unet),  # the network above (1.6M parameters)
        data=common.TINY_DATA,  # 20,000 procedural scenes
        train=common.TINY_TRAIN,  # 1,000 steps at batch 16
        # ancestral sampling: after ~1,000 steps it draws objects where DDIM still shows noise
        sample=dataclasses.replace(micro.sample, num_images=8, steps=100),  # 8 images, 100 sampler steps
    )


def _released() -> ExperimentConfig:
    return common.released_run(
        task="base",  # trained by experiments/train.py (alias experiments/train_base.py)
        name="base_released",  # recorded in the workdir's experiment.json
        model=get_preset("base"),  # OpenAI's released base: 64x64, 192 channels, text 16 x 512, 385M
        steps=2_500_000,  # optimiser steps
        batch_size=256,  # images per step, summed over hosts
    )


def _distill_guidance_micro() -> ExperimentConfig:
    micro = _micro()
    return dataclasses.replace(
        micro,
        task="distill-guidance",  # the student learns the teacher's guided output (glide_jax.train.distill)
        name="base_distill_guidance_micro",  # recorded in the workdir's experiment.json
        model=common.guidance_student(micro.model),  # the micro network reading the guidance weight w
        data=dataclasses.replace(
            micro.data,
            caption_dropout=0.0,  # every caption kept: the unconditional branch comes from the teacher
        ),
        train=dataclasses.replace(
            micro.train,
            init_from="",  # --set train.init_from=<the teacher: a micro base workdir or model directory>
            steps=4,  # optimiser steps
            lr=1e-4,  # Adam learning rate after warmup: a student starts at its teacher
            checkpoint_every=2,  # steps between checkpoints
            sample_every=-1,  # no preview grids
            distill=common.DISTILL_MICRO,  # w range and step counts
        ),
    )


def _distill_progressive_micro() -> ExperimentConfig:
    guided = _distill_guidance_micro()
    return dataclasses.replace(
        guided,
        task="distill-progressive",  # one round halving the DDIM steps (glide_jax.train.distill)
        name="base_distill_progressive_micro",  # recorded in the workdir's experiment.json
        train=dataclasses.replace(
            guided.train,
            mse_weight_clip=5.0,  # cap of the truncated-SNR weight max(1, 1/SNR) of the eps error
        ),
    )


def _distill_guidance() -> ExperimentConfig:
    finetune = common.finetune_variant(_released())
    return dataclasses.replace(
        finetune,
        task="distill-guidance",  # the student learns the teacher's guided output (glide_jax.train.distill)
        name="base_distill_guidance",  # recorded in the workdir's experiment.json
        model=common.guidance_student(finetune.model),  # the released network in bfloat16, remat, reading w
        data=dataclasses.replace(
            finetune.data,
            caption_dropout=0.0,  # every caption kept: the unconditional branch comes from the teacher
        ),
        train=dataclasses.replace(
            common.DISTILL_TRAIN,
            init_from="base",  # the teacher: OpenAI's released base, converted on first use
            sample_every=2000,  # preview grids: DDIM, 50 steps, at w = 3 (one evaluation per step)
            distill=common.DISTILL_RELEASED,  # w in [1, 5]
        ),
    )


def _distill_progressive(student_steps: int) -> ExperimentConfig:
    guided = _distill_guidance()
    return dataclasses.replace(
        guided,
        task="distill-progressive",  # one round halving the DDIM steps (glide_jax.train.distill)
        name=f"base_distill_progressive_{student_steps}",  # recorded in the workdir's experiment.json
        train=dataclasses.replace(
            guided.train,
            init_from="",  # --set train.init_from=<the previous round's workdir> (the teacher)
            sample_every=-1,  # previews sample on an even grid, not the student's trailing one
            mse_weight_clip=5.0,  # cap of the truncated-SNR weight max(1, 1/SNR) of the eps error
            distill=dataclasses.replace(
                guided.train.distill,
                teacher_steps=2 * student_steps,  # the previous round's DDIM steps (trailing spacing)
                student_steps=student_steps,  # this round's
            ),
        ),
    )


PROGRESSIVE = {f"distill_progressive_{n}": (lambda n=n: _distill_progressive(n)) for n in common.PROGRESSIVE_ROUNDS}
VARIANTS = ("micro", "tiny", "released", "paper", "finetune", "finetune_micro", "distill_guidance_micro",
            "distill_progressive_micro", "distill_guidance", *PROGRESSIVE)


def get_config(variant: str) -> ExperimentConfig:
    """The base-model experiment of one size; ``variant`` is one of ``VARIANTS`` (``paper``, ``finetune`` and
    ``finetune_micro`` derived from ``released`` and ``micro`` by ``_common.released_derived``)."""
    builders = {"micro": _micro, "tiny": _tiny, "released": _released,
                "distill_guidance_micro": _distill_guidance_micro,
                "distill_progressive_micro": _distill_progressive_micro,
                "distill_guidance": _distill_guidance, **PROGRESSIVE}
    return common.pick(common.released_derived(builders), variant, "base")
