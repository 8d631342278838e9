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

from glide_jax.sampling.images import make_grid, to_uint8
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.stages import (BaseConditioning, UpsampleConditioning, image_keys, sample_base,
                                      sample_upsample, stage_keys)
from glide_jax.train import inputs as data_lib
from glide_jax.train.experiment import ExperimentConfig
from glide_jax.train.sharding import wait_for_all_processes

SAMPLES_DIR = "samples"


class Previewer:
    """``previewer(ema_params, step)`` samples the fixed preview batch and writes ``samples/step_<step>.png``.

    The samples come from the sampling pipeline's own stages (``glide_jax.sampling.stages``): the
    base stage with classifier-free guidance (and the inpainting conditioning of an inpainting
    model), or the upsampler stage from the records' low-resolution images, as ``glide-jax``
    samples them.
    """

    def __init__(self, cfg: ExperimentConfig, workdir, source, tokenize: data_lib.Tokenize):
        self.cfg, self.model_cfg = cfg, cfg.model
        self.out_dir = Path(workdir) / SAMPLES_DIR
        sc = cfg.sample
        self.inputs = data_lib.preview_inputs(cfg, source, sc.num_images, sc.prompts)
        self.captions = [str(c) for c in self.inputs["captions"]]
        self.tokenizer = tokenize.tokenizer()
        self.options = StageOptions(sc.sampler, sc.steps, sc.temperature)
        self.options.validate("preview")
        self.keys = image_keys(jax.random.key(cfg.train.seed + 1), range(sc.num_images))
        self._gathers = 0  # previews drawn, the same count on every process

    def sample(self, params: Dict[str, Any]) -> np.ndarray:
        """float32 samples [n, S, S, 3] in [-1, 1] for ``params`` (``{"params": ...}``)."""
        model = LoadedModel(self.model_cfg, params, self.tokenizer)
        inp = self.inputs
        inpaint = (inp["image"], inp["inpaint_mask"]) if model.is_inpaint else None
        if model.is_super_res:
            out = sample_upsample(model, self.captions, inp["low_res"], stage_keys(self.keys, 1),
                                  UpsampleConditioning(self.options, inpaint))
        else:
            conditioning = BaseConditioning(self.options, self.cfg.sample.guidance_scale, inpaint=inpaint)
            out = sample_base(model, self.captions, stage_keys(self.keys, 0), conditioning)
        # Sampling compiles; the processes meet before the collective that gathers the samples.
        self._gathers += 1
        wait_for_all_processes(f"preview_{self._gathers}")
        return np.asarray(multihost_utils.process_allgather(jax.block_until_ready(out), tiled=True))[
            : self.cfg.sample.num_images]

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
