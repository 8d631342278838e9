"""The embedded inpainting model: the embedded base fine-tuned with 4 extra input channels.

As in GLIDE, the inpainting model starts from the trained base model; the new
input channels (masked image + mask) start at zero, so step 0 reproduces the
base model, and random box/blob/stroke erasures (glide_jax.data.masks) teach
it to fill holes consistently with the caption and the kept pixels.

It starts from relation-curriculum stage 3 (``base_embedded_h3``, the shipped base)
and keeps that stage's relations: "to the right of" in training scenes within 250
steps undid the base's left-right routing (docs/training.md, "Session 12"), and the
pipeline restates such captions into "to the left of" anyway.
"""

import dataclasses

from experiments.configs import base_embedded, base_embedded_h3


def get_config():
    cfg = base_embedded.get_config()
    return dataclasses.replace(
        cfg,
        task="inpaint",
        name="inpaint_embedded",
        model=dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, inpaint=True)),
        data=dataclasses.replace(cfg.data, relations=base_embedded_h3.get_config().data.relations),
        train=dataclasses.replace(cfg.train, steps=800, lr=3e-4, warmup_steps=50, ema_rate=0.995, ema_warmup=True,
                                  checkpoint_every=200, init_from="runs/base_embedded_h3"),
    )
