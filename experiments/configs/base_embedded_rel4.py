"""Relations, stage 2: ``base_embedded_fwd`` trained on with all four relations.

Once the model sends the first noun phrase of "above"/"to the left of" to the
top or left, "below" and "to the right of" only have to reverse that routing
(docs/training.md, "Session 10"). Start from stage 1
(``--set train.init_from=runs/base_embedded_fwd``).
Measured (session 10, from stage 1 at step 3,000): that held on the 16x16 bench, not here.
Within 500 steps the model lost the forward routing (swap probe 0.012, from 0.196;
mirror probe 0.005) and had not regained it at step 750, where it was stopped. Not
shipped; next to try: this stage with every scene a pair from the noisy half, as on the
bench, or a mix weighted towards the forward relations.
"""

import dataclasses

from experiments.configs import base_embedded_fwd
from glide_jax.data import shapes


def get_config():
    cfg = base_embedded_fwd.get_config()
    return dataclasses.replace(
        cfg,
        name="base_embedded_rel4",
        data=dataclasses.replace(cfg.data, relations=shapes.RELATIONS),
        train=dataclasses.replace(cfg.train, steps=1200),
    )
