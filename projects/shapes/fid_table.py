"""The shapes domain measured with FID's machinery end to end: a table of Fréchet distances.

    python -m projects.shapes.fid_table --inception pt_inception.pth --num-samples 128 --out runs/fid_table
    python -m projects.shapes.fid_table --inception pt_inception.pth --model embedded-fast \
        --sampler stochastic_fewstep --steps trailing1 trailing2 trailing4 trailing8 --clip-model CLIP_DIR

Every row is the distance of one set of images to the statistics of rendered held-out scenes:
another independent set of rendered scenes (what two draws from the data give), the embedded base
model's samples of the same captions at several step counts, and uniform noise. With pytorch-fid's
real Inception weights these are FIDs; with the random-weight network of the test fixtures
(``../shared/fixtures/fid/pt_inception-random.pth``) they are distances between random features: the
ordering is what they can show (rendered < well-sampled < few steps < noise), not a number to
compare with any published FID. Below 2,048 samples the covariances are rank-deficient and every
distance carries a sampling bias; the table is for the ordering at one sample count.
``--model`` samples another model set or base (the few-step ``embedded-fast``, a workdir) at its own
guidance recommendation; ``--clip-model`` (a Hugging Face CLIP folder) adds each set's CLIP score
against the captions it was drawn for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from glide_jax.data.shapes_source import ShapesSource
from glide_jax.errors import run_command
from glide_jax.evaluation.clip_score import ClipScorer, aggregate_clip_score
from glide_jax.evaluation.frechet import FeatureStatistics, frechet_distance
from glide_jax.evaluation.scorers import InceptionFeatures
from glide_jax.sampling.loading import load_pipeline
from glide_jax.sampling.options import StageOptions, steps_value
from glide_jax.sampling.request import GenerateRequest

STEPS = (5, 10, 20, 50)


def rendered(n: int, size: int, seed: int) -> Dict[str, List]:
    """``n`` rendered held-out scenes of side ``size`` and their captions (a source seed per set)."""
    source = ShapesSource(n, size, seed=seed, split="heldout")
    records = [source[i] for i in range(n)]
    return {"images": np.stack([r["image"] for r in records]), "captions": [r["caption"].decode() for r in records]}


def statistics(features: InceptionFeatures, images: np.ndarray, batch: int = 32) -> FeatureStatistics:
    stats = FeatureStatistics(features.dims)
    for start in range(0, len(images), batch):
        stats.add(features(images[start:start + batch]))
    return stats




def table(inception: str, num_samples: int, steps: Sequence[Union[int, str]], seed: int = 0, sampler: str = "ddpm",
          model: str = "embedded", clip_model: Optional[str] = None, recommended_start: bool = False) -> Dict:
    """Fréchet distances (and, with ``clip_model``, CLIP scores) of each set; ``steps`` are counts or
    respacing specs of ``model``'s base, sampled at the model's guidance recommendation from pure noise,
    or with ``recommended_start`` from where its ``sampling.json`` starts (a noised canvas)."""
    features = InceptionFeatures.from_file(inception)
    scorer = ClipScorer.from_directory(clip_model) if clip_model else None
    pipe = load_pipeline(model)
    size = pipe.upsampler.image_size
    reference = rendered(num_samples, size, seed=0)
    captions = reference["captions"]
    ref_mu, ref_sigma = statistics(features, reference["images"]).mean_cov()
    sets = {"rendered (another draw)": rendered(num_samples, size, seed=1)}
    seconds = {}
    for count in steps:
        started = time.perf_counter()
        stage = StageOptions(sampler, count)
        if recommended_start and pipe.base.sampling is not None:
            stage = dataclasses.replace(stage, start=pipe.base.sampling.start, canvas=pipe.base.sampling.canvas)
        images = pipe.generate(GenerateRequest(tuple(captions), seed=seed, batch_size=16, base=stage))
        seconds[f"{sampler} {count}"] = time.perf_counter() - started
        sets[f"{model}, {sampler} {count} steps"] = {"images": images, "captions": captions}
    noise = np.random.default_rng(seed).integers(0, 256, reference["images"].shape, dtype=np.uint8)
    sets["uniform noise"] = {"images": noise, "captions": captions}
    out = {"num_samples": num_samples, "image_size": size, "inception": str(inception), "model": model,
           "distances": {name: frechet_distance(*statistics(features, drawn["images"]).mean_cov(), ref_mu, ref_sigma)
                         for name, drawn in sets.items()},
           "sampling_seconds": seconds}
    if scorer is not None:
        out["clip_model"] = str(clip_model)
        out["clip_scores"] = {name: aggregate_clip_score(scorer.score_pairs(drawn["images"], drawn["captions"]))
                              for name, drawn in sets.items()}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projects.shapes.fid_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inception", required=True, help="pytorch-fid's Inception weights (.pth)")
    parser.add_argument("--num-samples", type=int, default=128, help="images per set (default 128)")
    parser.add_argument("--steps", type=steps_value, nargs="+", default=list(STEPS),
                        help="base step counts or respacing specs such as trailing4 (default 5 10 20 50)")
    parser.add_argument("--sampler", default="ddpm", help="base sampler (default ddpm)")
    parser.add_argument("--model", default="embedded",
                        help="model set or base model sampled (default embedded; e.g. embedded-fast, a workdir)")
    parser.add_argument("--recommended-start", action="store_true",
                        help="start where the model's sampling.json does (a noised canvas) instead of pure noise")
    parser.add_argument("--clip-model", default=None,
                        help="a Hugging Face CLIP folder: adds each set's CLIP score against its captions")
    parser.add_argument("--out", default=None, help="write the table as JSON here too")
    args = parser.parse_args(argv)

    def run() -> int:
        result = table(args.inception, args.num_samples, args.steps, sampler=args.sampler, model=args.model,
                       clip_model=args.clip_model, recommended_start=args.recommended_start)
        scores = result.get("clip_scores", {})
        for name, value in result["distances"].items():
            clip = f" {scores[name]:10.3f}" if name in scores else ""
            print(f"{name:48s} {value:12.3f}{clip}")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
