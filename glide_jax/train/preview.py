"""Sample grids during training: the EMA model, classifier-free guidance, a short sampler.

Loss curves say little about a text-to-image model; a few samples do. Every
preview uses the same inputs (the first records of the training source, or
the configured prompts; for the upsampler their low-resolution images, for
inpainting their images under fixed masks) and the same noise
(``fold_in(key(seed + 1), 0)``), so successive grids differ only through the
weights. Guidance runs the batch as ``[conditional..., unconditional...]``
with the empty caption as the unconditional half, as GLIDE does. Grid rows:
the samples, then (upsampler) the nearest-upscaled low-res input and the
original, or (inpainting) the masked input and the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from glide_jax.diffusion.guidance import classifier_free_guidance, inpaint_denoised_fn
from glide_jax.diffusion.samplers import sample_loop
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.families.registry import family_of
from glide_jax.sampling.images import make_grid, to_uint8
from glide_jax.train import inputs as data_lib
from glide_jax.train.experiment import ExperimentConfig
from glide_jax.train.sharding import wait_for_all_processes

SAMPLES_DIR = "samples"


def _twice(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, x], axis=0)


class Previewer:
    """``previewer(ema_params, step)`` samples the fixed preview batch and writes ``samples/step_<step>.png``."""

    def __init__(self, cfg: ExperimentConfig, workdir, source, tokenize: data_lib.Tokenize):
        model_cfg = cfg.model
        self.cfg, self.model_cfg = cfg, model_cfg
        self.out_dir = Path(workdir) / SAMPLES_DIR
        sc = cfg.sample
        n = sc.num_images
        self.inputs = data_lib.preview_inputs(cfg, source, n, sc.prompts)
        self.captions = [str(c) for c in self.inputs["captions"]]
        cond = tokenize(self.captions)
        uncond = tokenize([""] * n)
        self.tokens = np.concatenate([cond["tokens"], uncond["tokens"]])
        self.mask = np.concatenate([cond["mask"], uncond["mask"]])
        respacing = f"ddim{sc.steps}" if sc.sampler == "ddim" else str(sc.steps)
        self.schedule = make_schedule(model_cfg.diffusion, respacing=respacing)
        self.key = jax.random.fold_in(jax.random.key(cfg.train.seed + 1), 0)
        self._gathers = 0  # previews drawn, the same count on every process

    def sample(self, params: Dict[str, Any]) -> np.ndarray:
        """float32 samples [n, S, S, 3] in [-1, 1] for ``params`` (``{"params": ...}``)."""
        unet, sc, inp = self.model_cfg.unet, self.cfg.sample, self.inputs
        n, size = sc.num_images, unet.image_size
        cond: Dict[str, Any] = {}
        denoised_fn = None
        if unet.super_res:
            cond["low_res"] = _twice(inp["low_res"])
        if unet.inpaint:
            cond["inpaint_image"] = _twice(inp["image"])
            cond["inpaint_mask"] = _twice(inp["inpaint_mask"])
            denoised_fn = inpaint_denoised_fn(cond["inpaint_image"], cond["inpaint_mask"])
        tokens, mask = (self.tokens, self.mask) if unet.text.width else (None, None)
        model_fn = family_of(self.model_cfg).model_fn(self.model_cfg, params, tokens, mask, **cond)
        guided = classifier_free_guidance(model_fn, sc.guidance_scale)
        out = sample_loop(
            self.schedule,
            guided,
            (2 * n, size, size, unet.in_channels),
            sampler=sc.sampler,
            key=self.key,
            temperature=sc.temperature,
            denoised_fn=denoised_fn,
        )
        # Sampling compiles; the processes meet before the collective that gathers the samples.
        self._gathers += 1
        wait_for_all_processes(f"preview_{self._gathers}")
        return np.asarray(multihost_utils.process_allgather(jax.block_until_ready(out), tiled=True))[:n]

    def grid(self, samples: np.ndarray) -> np.ndarray:
        """uint8 grid: samples on the first row, then the reference inputs of the task."""
        unet, inp = self.model_cfg.unet, self.inputs
        rows = [samples]
        if unet.super_res:
            k = unet.image_size // inp["low_res"].shape[1]
            rows.append(inp["low_res"].repeat(k, axis=1).repeat(k, axis=2))
        if unet.inpaint:
            rows.append(inp["image"] * inp["inpaint_mask"])  # erased region shown mid-grey
        if len(rows) > 1:
            rows.append(inp["image"])
        images = to_uint8(np.concatenate(rows))
        return make_grid(images, ncols=len(samples))

    def __call__(self, params: Dict[str, Any], step: int) -> Optional[Path]:
        grid = self.grid(self.sample(params))
        if jax.process_index() != 0:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step_{step:07d}.png"
        Image.fromarray(grid).save(path)
        (self.out_dir / "prompts.txt").write_text("\n".join(self.captions) + "\n", encoding="utf-8")
        return path
