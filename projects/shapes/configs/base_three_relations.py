"""The embedded base, relation stage 3 (the shipped base): "above", "below" and "to the left of".

    python -m experiments.train --config projects/shapes/configs/base_three_relations.py:to_750 \\
        --workdir runs/shapes/base_three_relations      # then :to_1250, same workdir

Stage 2 learnt the exclusive-or for the vertical axis only and lost stage 1's
left-right routing. Here the vertical pair keeps its exclusive-or while the
horizontal axis gets only its forward relation, the first-order rule "the first
noun phrase goes left" that stage 1 learnt. "A to the right of B" is the same
scene as "B to the left of A": the model directory's ``sampling.json`` carries a
prompt rewrite that says such captions with the trained relation (see
``projects/shapes/restate.py``). Starts from stage 2 at step 2,750, as its
float16 export (``runs/shapes/base_four_relations_export/base``). Two phases in
one workdir: every scene a pair and every t from the noisy half to step 750,
then the mixed stream to step 1,250 to win back one-object captions.
"""

from glide_jax.train.experiment import ExperimentConfig
from projects.shapes.configs import _common as common

VARIANTS = tuple(common.RELATION_STAGES["base_three_relations"][2])  # its phases (see _common.RELATION_STAGES)


def get_config(variant: str) -> ExperimentConfig:
    """One phase of relation stage 3; ``variant`` is one of ``VARIANTS``, run in that order."""
    return common.relation_stage("base_three_relations", variant)
