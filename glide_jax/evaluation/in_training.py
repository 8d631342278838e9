"""Periodic evaluation inside training: the EMA model sampled and scored by the evaluation runner.

Why it lives here and not in ``glide_jax.train``: an evaluation samples through
:class:`glide_jax.sampling.pipeline.Pipeline`, which the training package may not import
(``tests/test_import_graph.py``: training composes models and diffusion, never the sampling
pipeline). So the loop takes a factory, ``train(cfg, workdir, evaluator_factory=...)``, and
``experiments.train`` passes :func:`periodic_evaluator`; training itself only calls what it is given.

:func:`periodic_evaluator` reads ``cfg.eval`` (:class:`glide_jax.train.experiment.EvalConfig`) once
at the start of a run: the captions, the Inception, the CLIP scorer, the reference (its statistics
are computed or loaded then) and the graders (``"module:function"`` names, imported by name so that
a project's grader can be configured without the package importing the project). Every call then
gathers the EMA parameters to the host, wraps them as a :class:`LoadedModel` with the run's
tokenizer and evaluates them into ``<workdir>/eval/step_<N>/`` with the same noise every time
(``eval.seed``), so successive figures differ only through the weights. All processes call it
together; each samples its shards, process 0 merges (:mod:`glide_jax.evaluation.runner`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from glide_jax.errors import InputError
from glide_jax.evaluation.captions import read_captions
from glide_jax.evaluation.clip_score import ClipScorer
from glide_jax.evaluation.runner import evaluate
from glide_jax.evaluation.scorers import ClipScoring, InceptionFeatures
from glide_jax.family import family_of
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.tokenizers import get_tokenizer

EVAL_FOLDER = "eval"
Evaluator = Callable[[Any, int], Dict[str, float]]  # (EMA parameters, step) -> metrics


def load_scorer(name: str) -> Callable:
    """The callable ``module:function`` names (``projects.shapes.grading:score``)."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"eval.scorers: cannot import {module_name!r} ({e})") from None
    scorer = getattr(module, attribute, None)
    if not callable(scorer):
        raise InputError(f"eval.scorers: {module_name} has no function {attribute!r}")
    return scorer


def scorer_name(name: str) -> str:
    """The name a grader's figures go under: its module's last part (``projects.shapes.grading:score`` ->
    ``grading``)."""
    return name.partition(":")[0].rsplit(".", 1)[-1]


def metrics_of(results: Dict[str, Any]) -> Dict[str, float]:
    """An evaluation's figures as flat ``eval/...`` metrics (for ``metrics.jsonl`` and TensorBoard)."""
    out = {}
    if results.get("fid") is not None:
        out["eval/fid"] = results["fid"]
    if results.get("clip_score") is not None:
        out["eval/clip_score"] = results["clip_score"]
    for scorer, values in results.get("scores", {}).items():
        out.update({f"eval/{scorer}/{key}": value for key, value in values.items()})
    out["eval/images_per_s"] = results["timing"]["images_per_s"]
    return out


def periodic_evaluator(run) -> Optional[Evaluator]:
    """The evaluator of a training run (``glide_jax.train.loop.Run``) per its ``cfg.eval``; None when off."""
    cfg, ec = run.cfg, run.cfg.eval
    if not ec.every:
        return None
    family = family_of(cfg.model)
    if not family.samples_images or family.is_super_res(cfg.model) or family.is_inpaint(cfg.model):
        raise InputError("eval.every: periodic evaluation samples text to image; it is for base models only")
    if ec.reference and not ec.inception:
        raise InputError("eval.reference is the FID reference: it needs eval.inception")
    if not (ec.inception or ec.clip_model or ec.scorers):
        raise InputError("eval.every is set but nothing is measured: set eval.inception (FID), eval.clip_model "
                         "(CLIP score) or eval.scorers")
    captions = read_captions(ec.captions, ec.num_samples)
    features = InceptionFeatures.from_file(ec.inception, resize=ec.resize, batch_size=ec.batch_size) \
        if ec.inception else None
    clip = ClipScoring(ClipScorer.from_directory(ec.clip_model), ec.batch_size) if ec.clip_model else None
    scorers = {scorer_name(name): load_scorer(name) for name in ec.scorers}
    tokenizer = get_tokenizer(run.tokenize.spec)
    request = dict(seed=ec.seed, guidance_scale=float(ec.guidance_scale), base=StageOptions(ec.sampler, ec.steps),
                   upsample=None)
    reference = ec.reference or None

    def evaluate_params(ema_params, step: int) -> Dict[str, float]:
        host = multihost_utils.process_allgather(ema_params, tiled=True)  # every process samples its own shards
        params = {"params": jax.tree.map(np.asarray, host)}
        pipeline = Pipeline(LoadedModel(cfg.model, params, tokenizer, source=f"{run.workdir} at step {step}"))
        results = evaluate(pipeline, captions, out_dir=run.workdir / EVAL_FOLDER / f"step_{step:07d}",
                           num_samples=ec.num_samples, request=request, features=features, clip=clip,
                           reference=reference, extra_scorers=scorers, batch_size=ec.batch_size,
                           replace_changed=True, progress=False, record={"captions": ec.captions, "step": step})
        return metrics_of(results)

    return evaluate_params

