"""Relations, stage 2: ``base_embedded_fwd`` trained on with all four relations.

Once the model sends the first noun phrase of "above"/"to the left of" to the
top or left, "below" and "to the right of" only have to reverse that routing
(docs/training.md, "Session 10"). Start from stage 1
(``--set train.init_from=runs/base_embedded_fwd``).
Measured (session 10, from stage 1 at step 3,000, as checked in): within 500 steps the
model lost the forward routing (swap probe 0.012, from 0.196; mirror probe 0.005) and had
not regained it at step 750, where it was stopped.
Session 11, from stage 1 at step 3,500, steps 0-2,250 with every scene a pair and every t
from the noisy half (``--set train.steps=2250 --set data.two_object_fraction=1.0 --set
train.high_noise_fraction=1.0``): the routing fell at first (swap 0.026 at step 250), then
came back for all four relations (mirror 0.092, swap 0.097 at step 1,500, flat to 2,000;
data 0.21). Then 500 steps as checked in (``--set train.steps=2750``) to win back
one-object captions: the shipped embedded base, 60.2% of the held-out captions fully right
("above" 91%, "below" 86%, "to the left of" 31%, "to the right of" 23%; docs/training.md,
"Session 11").
Session 12, from stage 3 (``base_embedded_h3``) at step 750 with the concentrated mix: the
left-right routing fell within 250 steps (horizontal swap probe 0.178 -> 0.023) and was
still 0.016 at step 750, where it was stopped; stage 3 is shipped instead.
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
        train=dataclasses.replace(cfg.train, steps=2750),
    )
