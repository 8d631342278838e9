"""Evaluate a sampling pipeline: FID, CLIP score and extra per-image scores over many samples.

``evaluate(pipeline, captions, out_dir=..., num_samples=N, ...)`` draws sample ``i`` from caption
``i mod len(captions)`` with the request's seed and ``first_index=i`` (``Pipeline.generate``'s
numbering: the image does not depend on the batch it is drawn in nor on the process drawing it),
scores it, and returns the figures (also written to ``out_dir/results.json``).

* **Streaming**: samples are drawn ``batch_size`` at a time and scored at once; only one batch of
  images exists at a time.
* **Sharded**: the Inception and the CLIP towers split each batch over this process's devices
  (:mod:`glide_jax.evaluation.scorers`).
* **Resumable**: the indices are cut into shards of ``shard_size``; each finished shard is written
  to ``out_dir/shards/`` (:mod:`glide_jax.evaluation.eval_dir`) and a rerun skips it. A folder
  started with other settings (model weights, sampler, seed, captions, feature network...) is
  refused, so a resumed evaluation is the uninterrupted one.
* **Several processes** (``jax.distributed``, e.g. ``python -m experiments.launch``): process ``p``
  of ``P`` draws every ``P``-th of the shards not yet written, starting at the ``p``-th; after a
  barrier process 0 merges every shard in index order, in float64, so 1 and 2 processes give the
  same numbers to the bit. The output folder must be shared by the processes (as training's
  checkpoints are).

FID needs a feature extractor (``features``, e.g. :class:`InceptionFeatures`) and a reference
(:func:`glide_jax.evaluation.reference.reference_statistics`); without a reference only the
samples' statistics are written (``statistics.npz``, pytorch-fid's format). Below 2,048 samples
FID is biased and :class:`glide_jax.evaluation.frechet.SmallSampleWarning` says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import jax
import numpy as np
from tqdm.auto import tqdm

from glide_jax.config import config_to_dict
from glide_jax.errors import InputError
from glide_jax.evaluation import eval_dir
from glide_jax.evaluation.clip_score import ClipScoreAccumulator, ClipScorer
from glide_jax.evaluation.frechet import FeatureStatistics, frechet_distance
from glide_jax.evaluation.reference import reference_statistics, write_statistics
from glide_jax.evaluation.scorers import ClipScoring, tree_digest
from glide_jax.sampling.options import (BASE_DEFAULT, DEFAULT, GUIDANCE_DEFAULT, UPSAMPLE_DEFAULT, guided_part,
                                        resolve_stage)
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.sampling.request import GenerateRequest
from glide_jax.train.sharding import wait_for_all_processes

DEFAULT_BATCH_SIZE = 16
DEFAULT_SHARD_SIZE = 256
SAMPLING_TIMEOUT_S = 7 * 24 * 3600  # how long a process that has drawn its shards waits for the others
Scorer = Callable[[np.ndarray, str], Mapping[str, Any]]  # (uint8 image [H, W, 3], caption) -> {name: value}
_barrier_count = itertools.count()  # every process calls evaluate() in the same order, so the names agree


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def request_template(request: Union[GenerateRequest, Mapping[str, Any], None]) -> GenerateRequest:
    """The fields every sample's request shares (its prompts and indices are replaced), checked for evaluation."""
    if request is None:
        request = GenerateRequest(("",))
    elif isinstance(request, Mapping):
        request = GenerateRequest(("",), **request)
    elif not isinstance(request, GenerateRequest):
        raise TypeError(f"request must be a GenerateRequest or a dict of its fields, got {type(request).__name__}")
    if isinstance(request.seed, jax.Array):
        raise InputError("an evaluation's seed must be an integer (it is recorded with the results)")
    if request.init_image is not None or request.inpaint_image is not None:
        raise InputError("evaluation samples text to image: no init_image or inpaint_image")
    if request.keep != 1:
        raise InputError(f"evaluation draws one image per caption: keep must be 1, got {request.keep}")
    return request


def resolved_request(pipeline: Pipeline, template: GenerateRequest) -> GenerateRequest:
    """``template`` with the models' recommendations filled in: what is sampled, and recorded."""
    guidance = template.guidance_scale
    if guidance is None:
        guidance = pipeline.base.guidance_scale if pipeline.base.guidance_scale is not None else GUIDANCE_DEFAULT
    base = resolve_stage(template.base, pipeline.base, BASE_DEFAULT)
    upsample = template.upsample
    if upsample is not None and pipeline.upsampler is None and isinstance(upsample, str) and upsample == DEFAULT:
        upsample = None
    elif upsample is not None:
        upsample = resolve_stage(upsample, pipeline.upsampler, UPSAMPLE_DEFAULT)
    return dataclasses.replace(template, guidance_scale=guidance, base=base, upsample=upsample,
                               guidance_interval=guided_part(template.guidance_interval, base))


def _request_settings(request: GenerateRequest) -> Dict[str, Any]:
    return {"seed": int(request.seed), "guidance_scale": request.guidance_scale,
            "base": dataclasses.asdict(request.base),
            "upsample": None if request.upsample is None else dataclasses.asdict(request.upsample),
            "guidance_interval": request.guidance_interval, "dynamic_threshold": request.dynamic_threshold,
            "clip_guidance_scale": request.clip_guidance_scale, "negative_prompt": request.negative_prompt,
            "candidates": request.candidates, "rewrite_prompts": request.rewrite_prompts}


def _model_settings(model) -> Optional[Dict[str, Any]]:
    if model is None:
        return None
    return {"source": model.source, "config": config_to_dict(model.config), "weights": tree_digest(model.params)}


def _scalars(values: Mapping[str, Any]) -> Dict[str, float]:
    """The numeric entries of a scorer's answer (booleans as 0/1); None and other values are left out."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))}


@dataclasses.dataclass
class _Job:
    """One evaluation's fixed parts, shared by the shards it draws."""

    pipeline: Pipeline
    captions: List[str]
    request: GenerateRequest
    features: Any
    clip: Optional[ClipScoring]
    scorers: Dict[str, Scorer]
    batch_size: int

    def shard(self, indices: range, bar) -> Dict[str, np.ndarray]:
        """Draw and score the samples ``indices``; the arrays of their shard file."""
        features, clip_scores, extra = [], [], []
        seconds = np.zeros(2)
        for first in range(indices.start, indices.stop, self.batch_size):
            prompts = [self.captions[i % len(self.captions)]
                       for i in range(first, min(first + self.batch_size, indices.stop))]
            start = time.perf_counter()
            images = self.pipeline.generate(dataclasses.replace(
                self.request, prompts=tuple(prompts), first_index=first, batch_size=self.batch_size))
            sampled = time.perf_counter()
            if self.features is not None:
                features.append(np.asarray(self.features(images), np.float32))
            if self.clip is not None:
                clip_scores.append(self.clip.score_pairs(images, prompts).astype(np.float64))
            for image, prompt in zip(images, prompts):
                extra.append({name: _scalars(scorer(image, prompt)) for name, scorer in self.scorers.items()})
            seconds += (sampled - start, time.perf_counter() - sampled)
            bar.update(len(prompts))
        arrays = {"seconds": seconds}
        if features:
            arrays["features"] = np.concatenate(features)
        if clip_scores:
            arrays["clip"] = np.concatenate(clip_scores)
        for name in self.scorers:
            for key in sorted({key for row in extra for key in row[name]}):
                arrays[f"extra/{name}/{key}"] = np.array([row[name].get(key, np.nan) for row in extra], np.float64)
        return arrays


def _shard_ranges(num_samples: int, shard_size: int) -> List[range]:
    return [range(start, min(start + shard_size, num_samples)) for start in range(0, num_samples, shard_size)]


def _reference(reference, features, batch_size: int, cache_dir):
    if reference is None:
        return None
    if isinstance(reference, tuple) and len(reference) == 2:
        mu, sigma = (np.asarray(a, np.float64) for a in reference)
        info = {"kind": "arrays"}
    else:
        mu, sigma, info = reference_statistics(reference, features, batch_size, cache_dir)
    if features is not None and mu.shape != (features.dims,):
        raise InputError(f"the reference statistics have {mu.shape[0] if mu.ndim else 0} dimensions, "
                         f"the features {features.dims}")
    return mu, sigma, info


def _versions() -> Dict[str, str]:
    out = {}
    for package in ("glide_jax", "jax", "flax", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def evaluate(pipeline: Pipeline, captions: Sequence[str], *, out_dir, num_samples: int,
             request: Union[GenerateRequest, Mapping[str, Any], None] = None, features=None,
             clip: Union[ClipScorer, ClipScoring, None] = None, reference=None,
             extra_scorers: Optional[Mapping[str, Scorer]] = None, batch_size: int = DEFAULT_BATCH_SIZE,
             shard_size: int = DEFAULT_SHARD_SIZE, max_shards: Optional[int] = None, replace_changed: bool = False,
             progress: bool = True, record: Optional[Mapping[str, Any]] = None, cache_dir=None) -> Dict[str, Any]:
    """Sample ``num_samples`` images of ``captions`` with ``pipeline`` and score them; see the module docstring.

    ``request``: the shared request fields (seed, guidance_scale, base, upsample, ...; a
    ``GenerateRequest`` whose prompts are ignored, or a dict). ``features``: an
    :class:`~glide_jax.evaluation.scorers.InceptionFeatures` (or any extractor) for FID; ``clip``: a
    ``ClipScorer`` for the CLIP score; ``reference``: a pytorch-fid ``.npz``, reference images (a folder
    or shards) or ``(mu, sigma)``; ``extra_scorers``: ``{name: scorer(image_uint8, caption) -> dict}``
    whose numeric answers are averaged over the samples (booleans: the fraction true).
    ``max_shards`` stops this process after that many new shards (the rest on a rerun);
    ``replace_changed`` clears a folder of other settings instead of refusing it. ``record`` adds
    descriptive entries (names, specs) to ``results.json``. Returns the results (with
    ``"complete": False`` and no figures while shards remain).
    """
    wall = time.perf_counter()
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a Pipeline, got {type(pipeline).__name__}")
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise InputError("captions must be a non-empty list of strings")
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("shard_size", shard_size)):
        _positive(name, value)
    if max_shards is not None and (isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 0):
        raise InputError(f"max_shards must be an integer >= 0, got {max_shards!r}")
    scorers = dict(extra_scorers or {})
    bad = [name for name, scorer in scorers.items() if not callable(scorer) or "/" in str(name)]
    if bad:
        raise InputError(f"extra scorer {bad[0]!r} must be a callable (image, caption) -> dict named without '/'")
    if features is None and reference is not None:
        raise InputError("FID against a reference needs a feature extractor (the Inception weights)")
    if isinstance(clip, ClipScorer):
        clip = ClipScoring(clip, batch_size)
    sample_request = resolved_request(pipeline, request_template(request))
    guided_by_clip = sample_request.clip_guidance_scale is not None or sample_request.candidates > 1
    settings = {
        "num_samples": num_samples, "shard_size": shard_size, "batch_size": batch_size,
        "captions": {"count": len(captions),
                     "digest": hashlib.blake2b("\n".join(captions).encode(), digest_size=16).hexdigest()},
        "request": _request_settings(sample_request),
        "models": {"base": _model_settings(pipeline.base), "upsampler": _model_settings(pipeline.upsampler),
                   "noise_aware_clip": _model_settings(pipeline.clip if guided_by_clip else None)},
        "features": None if features is None else features.describe(),
        "clip_score": None if clip is None else clip.describe(),
        "scorers": sorted(scorers),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = jax.process_index() == 0
    barrier = f"evaluate_{next(_barrier_count)}"
    eval_dir.check_or_clear(out_dir, settings, replace_changed, writer)
    reference_stats = None
    if writer:
        (out_dir / eval_dir.SHARDS).mkdir(exist_ok=True)
        if eval_dir.read_settings(out_dir) is None:
            eval_dir.write_json(out_dir / eval_dir.SETTINGS_FILE, settings)
        reference_stats = _reference(reference, features, batch_size, cache_dir)  # before sampling: fail fast
    wait_for_all_processes(f"{barrier}_ready")

    shards = _shard_ranges(num_samples, shard_size)
    pending = [k for k in range(len(shards)) if not eval_dir.shard_path(out_dir, k).exists()]
    mine = pending[jax.process_index()::jax.process_count()]
    mine = mine if max_shards is None else mine[:max_shards]
    wait_for_all_processes(f"{barrier}_start")  # every process has read the folder before any shard is written
    job = _Job(pipeline, captions, sample_request, features, clip, scorers, batch_size)
    with tqdm(total=sum(len(shards[k]) for k in mine), unit="img", desc="evaluate",
              disable=not (progress and writer)) as bar:
        for k in mine:
            eval_dir.write_shard(out_dir, k, job.shard(shards[k], bar))
    wait_for_all_processes(f"{barrier}_sampled", timeout_s=SAMPLING_TIMEOUT_S)

    done = sum(eval_dir.shard_path(out_dir, k).exists() for k in range(len(shards)))
    results_path = out_dir / eval_dir.RESULTS_FILE
    if done < len(shards):
        return {"complete": False, "finished_shards": done, "shards": len(shards), "out_dir": str(out_dir)}
    if writer:
        results = _merge(out_dir, shards, settings, features, clip is not None, reference_stats)
        results.update(record=dict(record or {}), versions=_versions(), settings=settings,
                       timing={**results["timing"], "wall_s": time.perf_counter() - wall})
        eval_dir.write_json(results_path, results)
    wait_for_all_processes(f"{barrier}_merged")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    return {**results, "complete": True, "out_dir": str(out_dir)}


def _merge(out_dir: Path, shards: List[range], settings, features, with_clip: bool, reference_stats) -> Dict[str, Any]:
    """The figures of every shard, read in index order and accumulated in float64."""
    stats = FeatureStatistics(features.dims) if features is not None else None
    clip = ClipScoreAccumulator() if with_clip else None
    extra: Dict[str, np.ndarray] = {}
    seconds = np.zeros(2)
    for k, indices in enumerate(shards):
        arrays = eval_dir.read_shard(out_dir, k, len(indices))
        if stats is not None:
            stats.add(arrays["features"])
        if clip is not None:
            clip.update(arrays["clip"])
        for name, values in arrays.items():
            if name.startswith("extra/"):
                given = ~np.isnan(values)
                extra.setdefault(name, np.zeros(2))
                extra[name] += (values[given].sum(), given.sum())
        seconds += arrays["seconds"]
    scores: Dict[str, Dict[str, float]] = {}
    for name, (total, count) in sorted(extra.items()):
        _, scorer, key = name.split("/", 2)
        scores.setdefault(scorer, {})[key] = float(total / count)
    num_samples = settings["num_samples"]
    out: Dict[str, Any] = {"num_samples": num_samples, "fid": None, "clip_score": None, "scores": scores,
                           "reference": None, "statistics": None}
    if stats is not None:
        mu, sigma = stats.mean_cov()
        out["statistics"] = str(write_statistics(out_dir / eval_dir.STATISTICS_FILE, mu, sigma))
        if reference_stats is not None:
            out["fid"] = frechet_distance(mu, sigma, reference_stats[0], reference_stats[1])
            out["reference"] = reference_stats[2]
    if clip is not None:
        out["clip_score"] = clip.result()
    out["timing"] = {"sampling_s": float(seconds[0]), "scoring_s": float(seconds[1]),
                     "images_per_s": float(num_samples / max(seconds.sum(), 1e-9))}
    return out
