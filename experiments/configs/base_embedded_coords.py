"""Placed single objects with coordinate input channels: is absolute position what the U-Net lacks?

``base_embedded_placed`` learnt placed captions as one-object captions but put
the object in the named half only at chance. Its U-Net's only absolute
position cue is the zero padding of its convolutions, so this variant adds
``model.unet.coord_channels`` (each pixel's row and column as two more input
channels; zero-weight inputs when warm-started, so step 0 computes what the
source did) and trains on placed single objects only, from
``--set train.init_from=runs/base_embedded_placed``.

Measured (session 6, 1,000 steps x 32, CFG 3, DDPM 50, start 0.85): placed:96
40.6% correct, position 45%; the same run without coordinates gave 35.4% /
41%. Chance either way: absolute position is not what is missing. Not
shipped; docs/training.md, "Relations: what was measured and tried".
"""

import dataclasses

from experiments.configs import base_embedded_placed


def get_config():
    cfg = base_embedded_placed.get_config()
    return dataclasses.replace(
        cfg,
        name="base_embedded_coords",
        model=dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, coord_channels=True)),
        data=dataclasses.replace(cfg.data, two_object_fraction=0.0, placement_fraction=1.0),
        train=dataclasses.replace(cfg.train, steps=1000),
    )
