"""Start-up of the demo: run each tab's default request once, so every sampling loop is compiled
before the first visitor arrives (the time it takes is shown on the page)."""

from __future__ import annotations

import time
from typing import Dict

import numpy as np

from glide_jax.demo import handlers
from glide_jax.demo.models import DemoModels


def warm_up(models: DemoModels) -> Dict[str, float]:
    """Run each tab's default request once (compiling its loops); seconds per tab, also kept on ``models``."""
    size = models.generate.base.image_size
    sketch = np.full((size, size, 3), 200, np.uint8)
    sketch[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (220, 30, 30)
    requests = {"generate": lambda: handlers.generate(models, handlers.GenerateForm(prompt="a red circle")),
                "edit": lambda: handlers.edit(models, handlers.EditForm(prompt="a red square", image=sketch))}
    if models.inpaint is not None:
        size = models.inpaint.base.image_size
        mask = np.ones((size, size), bool)
        mask[: size // 2] = False
        requests["inpaint"] = lambda: handlers.inpaint(
            models, handlers.InpaintForm(prompt="a red circle", image=sketch if sketch.shape[0] == size else
                                            np.full((size, size, 3), 200, np.uint8), mask=mask))
    for tab, run in requests.items():
        started = time.perf_counter()
        run()
        models.warmup_seconds[tab] = time.perf_counter() - started
    return models.warmup_seconds
