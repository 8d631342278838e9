"""The embedded base, relation stage 1: "above" and "to the left of" only, each pair wholly in its halves.

    python -m experiments.train --config projects/shapes/configs/base_forward.py:to_1500 \\
        --workdir runs/shapes/base_forward      # then :to_3000, then :to_3500, same workdir

Why this stage: over all four relations the place of a noun phrase is the
exclusive-or of its position in the caption and the relation's direction ("A
above B" and "A below B" put A at opposite ends), so neither the word order nor
the relation word alone predicts where anything goes, and gradient descent has
no first-order signal to start from. With only the two "forward" relations the
first noun phrase always goes first (top or left) and the relation word only
picks the axis; that rule is learnt. Every pair is drawn with each object wholly
in its half of the relation's axis (``pair_layout="halves"``), a sharp target.

The objective is tilted towards high noise, where a scene's layout is decided:
part of each batch draws t from the upper half of the chain and the loss has
truncated-SNR weighting (cap 50). Starts from the pretrained base at step
10,000, as its float16 export (``runs/shapes/base_pretrain_export/base``,
written by ``python -m projects.shapes.export_embedded``; see this project's README).
Three phases in one workdir: the mixed stream to step 1,500, every scene a pair
and every t from the noisy half to step 3,000 (where the routing is learnt),
then the mixed stream again to step 3,500 to win back one-object captions.
"""

from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common

VARIANTS = tuple(common.RELATION_STAGES["base_forward"][2])  # its phases (see _common.RELATION_STAGES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of relation stage 1; ``variant`` is one of ``VARIANTS``, run in that order."""
    return common.relation_stage("base_forward", variant)
