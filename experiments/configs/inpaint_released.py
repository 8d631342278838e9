"""The released base-inpaint architecture, fine-tuned from the released base (OpenAI's or your own run).

``train.init_from`` defaults to the released ``base`` checkpoint (converted on
first use; ``glide-jax download base`` fetches it); a training workdir or a
model directory works as well.
"""

import dataclasses

from experiments.configs import base_released
from glide_jax.config import get_preset


def get_config():
    cfg = base_released.get_config()
    return dataclasses.replace(
        cfg,
        task="inpaint",
        name="inpaint_released",
        model=get_preset("base-inpaint"),
        train=dataclasses.replace(cfg.train, init_from="base", steps=100_000, lr=5e-5),
    )
