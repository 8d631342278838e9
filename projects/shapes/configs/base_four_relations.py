"""The embedded base, relation stage 2: all four relations, from stage 1.

    python -m experiments.train --config projects/shapes/configs/base_four_relations.py:to_2250 \\
        --workdir runs/shapes/base_four_relations      # then :to_2750, same workdir

Once the model sends the first noun phrase of "above" and "to the left of" to
the top or the left, "below" and "to the right of" only have to reverse that
routing. Starts from stage 1 at step 3,500 (its workdir,
``runs/shapes/base_forward``). Two phases in one workdir: every scene a pair and
every t from the noisy half to step 2,250 (the forward routing first falls,
then comes back together with the mirrored relations), then the mixed stream to
step 2,750 to win back one-object captions. This model learns the exclusive-or
for the vertical axis but loses stage 1's left-right rule; stage 3 restores it.
"""

from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common

VARIANTS = tuple(common.RELATION_STAGES["base_four_relations"][2])  # its phases (see _common.RELATION_STAGES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of relation stage 2; ``variant`` is one of ``VARIANTS``, run in that order."""
    return common.relation_stage("base_four_relations", variant)
