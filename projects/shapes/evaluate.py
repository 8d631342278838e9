"""Generate captioned-shapes samples with a pipeline and grade them: the logic behind ``eval_shapes``.

Why a separate module: :mod:`projects.shapes.grading` is pure numpy image
analysis; this one drives a :class:`glide_jax.sampling.pipeline.Pipeline` (text
to image, or inpainting of rendered ground-truth scenes), scores every sample
and aggregates, so the command-line tool stays a thin argument parser and the
same evaluation can run from a notebook or a training loop.

Inpainting cases (:func:`inpaint_case`): the caption's scene is placed and
rendered with the data package's own geometry rules, one object (chosen by
the seeded generator) is erased together with a ``ERASE_PAD`` border (mask 0
there), and the model is asked to fill the hole from the full caption. Two-object
scenes keep ``shapes.MIN_GAP`` between bounding boxes, so the padded hole never
cuts into the other object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from glide_jax.data import shapes
from glide_jax.errors import InputError
from glide_jax.sampling.options import (BASE_DEFAULT, DEFAULT, GUIDANCE_DEFAULT, UPSAMPLE_DEFAULT, guided_part,
                                        resolve_stage)
from glide_jax.sampling.request import GenerateRequest
from projects.shapes import grading

ERASE_PAD = 0.025  # border added around the erased object's bounding box, fraction of the image side


def prompts_from(spec: str) -> List[str]:
    """Captions from ``heldout:N`` (``shapes.heldout_prompts(N)``), ``single:N``
    (``shapes.single_prompts(N)``) or a file with one caption a line."""
    if spec.startswith("heldout:"):
        return shapes.heldout_prompts(int(spec.split(":", 1)[1]))
    if spec.startswith("single:"):
        return shapes.single_prompts(int(spec.split(":", 1)[1]))
    path = Path(spec)
    if not path.exists():
        raise InputError(f"prompts file {spec} does not exist (or use heldout:N or single:N)")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"prompts file {spec} has no captions")
    for p in prompts:
        shapes.parse_caption(p)  # fail early, naming the caption, instead of after sampling
    return prompts


def inpaint_case(caption: str, size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, int]:
    """(uint8 [S, S, 3] scene of ``caption``, float32 [S, S] mask with 0 over one object, its index)."""
    parsed = shapes.parse_caption(caption)
    if parsed.relation is None:
        objects = [shapes.place_single(rng, parsed.objects[0])]
    else:
        a, b = parsed.objects
        objects = shapes.place_pair(rng, (a.color, a.shape), (b.color, b.shape), parsed.relation)
    index = int(rng.integers(len(objects)))
    x0, y0, x1, y1 = objects[index].bbox
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    hole = (x >= x0 - ERASE_PAD) & (x <= x1 + ERASE_PAD) & (y >= y0 - ERASE_PAD) & (y <= y1 + ERASE_PAD)
    return shapes.render_scene(objects, size), (~hole).astype(np.float32), index


def _save(save_dir: Path, i: int, image: np.ndarray, record: dict, extra: Optional[dict] = None):
    from PIL import Image

    Image.fromarray(image).save(save_dir / f"{i:04d}.png")
    for name, arr in (extra or {}).items():
        Image.fromarray(arr).save(save_dir / f"{i:04d}_{name}.png")
    with open(save_dir / "scores.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _list_or_none(interval) -> Optional[list]:
    return None if interval is None else list(interval)


def evaluate(pipe, prompts: Sequence[str], *, n_per_prompt: int = 1, seed: int = 0,
             guidance_scale: Optional[float] = None,
             base=None, upsample=None, clip_guidance_scale: Optional[float] = None, batch_size: Optional[int] = None,
             inpaint: bool = False, save_dir=None, progress: bool = False, rewrite_prompts: bool = True,
             guidance_interval=None) -> dict:
    """Sample ``n_per_prompt`` images per caption, score them; returns ``{"summary", "samples", "settings"}``.

    Unset ``guidance_scale``/``base``/``upsample`` take the models' recommended
    settings; ``settings`` reports what was used. ``rewrite_prompts`` is ``Pipeline.generate``'s:
    the model may be asked for a caption as its base model's prompt rewrites say it (for the
    embedded base, "A to the right of B" as "B to the left of A", the same scene), and every
    image is graded against the caption as written; ``settings["restated"]`` counts the
    captions the rewrites changed. ``guidance_interval`` is ``Pipeline.generate``'s.

    ``summary`` is :func:`grading.aggregate` of all samples; ``samples``
    holds one record per image (caption, prompt index, the score dict). With
    ``save_dir`` the images (and, for inpainting, each source and mask) are
    written as PNGs next to ``scores.jsonl``.
    """
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts to evaluate")
    if n_per_prompt < 1:
        raise InputError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    for p in prompts:
        shapes.parse_caption(p)
    base = resolve_stage(DEFAULT if base is None else base, pipe.base, BASE_DEFAULT)
    if upsample is not None:
        upsample = resolve_stage(upsample, pipe.upsampler, UPSAMPLE_DEFAULT)
    if guidance_scale is None:
        guidance_scale = pipe.base.guidance_scale if pipe.base.guidance_scale is not None else GUIDANCE_DEFAULT
    settings = {"sampler": base.sampler, "steps": base.steps,
                "start": None if inpaint or base.start == 1.0 else {"fraction": base.start, "canvas": base.canvas},
                "guidance": None if clip_guidance_scale is not None else guidance_scale,
                "clip_guidance": clip_guidance_scale,
                "guidance_interval": _list_or_none(guided_part(guidance_interval, base)),
                "restated": sum(pipe.rewrite([p])[0] != p for p in prompts) if rewrite_prompts else 0,
                "upsample": None if upsample is None else dict(sampler=upsample.sampler, steps=upsample.steps,
                                                               temperature=upsample.temperature,
                                                               start=upsample.start)}
    request = GenerateRequest(prompts, guidance_scale=guidance_scale, base=base, upsample=upsample,
                              clip_guidance_scale=clip_guidance_scale, rewrite_prompts=rewrite_prompts,
                              guidance_interval=guidance_interval)
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "scores.jsonl").unlink(missing_ok=True)
    records = []
    if not inpaint:
        rows = [p for p in prompts for _ in range(n_per_prompt)]
        images = pipe.generate(request, prompts=tuple(rows), seed=seed, batch_size=batch_size or min(len(rows), 16),
                               progress=progress)
        for i, (caption, image) in enumerate(zip(rows, images)):
            records.append({"caption": caption, "prompt": i // n_per_prompt, **grading.score(image, caption)})
            if save_dir is not None:
                _save(save_dir, i, image, records[-1])
    else:
        up = pipe.upsampler is not None and upsample is not None
        size = (pipe.upsampler if up else pipe.base).config.unet.image_size
        for j, caption in enumerate(prompts):
            source, mask, erased = inpaint_case(caption, size, np.random.default_rng([seed, j]))
            images = pipe.generate(request, prompts=(caption,) * n_per_prompt, seed=seed + j, inpaint_image=source,
                                   inpaint_mask=mask, batch_size=batch_size or n_per_prompt, progress=progress)
            for k, image in enumerate(images):
                rec = {"caption": caption, "prompt": j, "erased": erased,
                       **grading.score_inpaint(image, source, mask, caption)}
                records.append(rec)
                if save_dir is not None:
                    extra = {"source": source, "mask": (mask * 255).astype(np.uint8)} if k == 0 else None
                    _save(save_dir, len(records) - 1, image, rec, extra)
    return {"summary": grading.aggregate(records), "samples": records, "settings": settings}


def format_table(summary: dict) -> str:
    """A plain-text table of a :func:`grading.aggregate` summary."""
    lines = [f"{'attribute':<10} {'accuracy':>8}", f"{'-' * 10} {'-' * 8}"]
    lines += [f"{k:<10} {v:>8.3f}" for k, v in summary["per_attribute"].items()]
    lines += [f"{'-' * 10} {'-' * 8}", f"{'correct':<10} {summary['accuracy']:>8.3f}", f"{'n':<10} {summary['n']:>8d}"]
    if "mean_keep_mad" in summary:
        lines.append(f"{'keep MAD':<10} {summary['mean_keep_mad']:>8.2f}")
    return "\n".join(lines)
