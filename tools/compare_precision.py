"""bfloat16 against float32 compute: ``python -m tools.compare_precision``; prints JSON.

Three measurements, each running the same parameters (float32) once per
compute dtype:

* ``base_forward``: the full-size ``base`` U-Net (random weights) on one 64×64
  batch of 2 at several timesteps: max and mean abs difference of its eps and
  variance outputs, and the mean abs of the float32 output for scale;
* ``embedded_sample``: whole samples of the embedded base model with its
  recommended sampler, same prompts and seed: max abs difference of the uint8
  pixels and the share of pixel values that differ;
* ``base_step_seconds``: the full-size base CFG step (batch-2 forward) in each
  dtype, alternated ``--reps`` times so load changes on a shared machine hit
  both alike; the median of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from typing import Sequence

PROMPTS = ("a red circle above a blue square", "a green triangle to the left of a yellow circle",
           "a blue square below a red triangle", "a yellow square")
TIMESTEPS = (999, 500, 100, 10)
DTYPES = ("float32", "bfloat16")


def base_forwards(timesteps: Sequence[int] = TIMESTEPS, reps: int = 3) -> dict:
    """Errors of the bf16 base forward against f32 at each timestep, and both dtypes' step times."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from glide_jax.families.unet import unet_apply, unet_model_fn
    from tools.benchmark_sample import random_model

    config, params = random_model("base")
    rows, size, ctx = 2, config.unet.image_size, config.unet.text.text_ctx
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 1000, (rows, ctx)), jnp.int32)
    mask = jnp.zeros((rows, ctx), bool).at[:, :12].set(True)
    x = jax.random.normal(jax.random.key(1), (rows, size, size, 3))
    forwards = {}
    for dtype in DTYPES:
        unet = dataclasses.replace(config.unet, dtype=dtype)
        model_fn = unet_model_fn(unet, params, tokens, mask)
        forwards[dtype] = (jax.jit(unet_apply(unet)), model_fn.args)
    errors = {}
    for t in timesteps:
        steps = jnp.full((rows,), t, jnp.int32)
        out = {dtype: np.asarray(fn(*args, x, steps)) for dtype, (fn, args) in forwards.items()}
        assert out["bfloat16"].dtype == np.float32
        for name, part in (("eps", slice(0, 3)), ("variance", slice(3, 6))):
            reference, difference = out["float32"][..., part], np.abs(out["bfloat16"][..., part] - out["float32"][..., part])
            errors[f"t={t} {name}"] = {"max_abs": float(difference.max()), "mean_abs": float(difference.mean()),
                                      "mean_abs_f32_output": float(np.abs(reference).mean())}
    steps = jnp.full((rows,), 500, jnp.int32)
    times = {dtype: [] for dtype in DTYPES}
    for _ in range(reps):
        for dtype, (fn, args) in forwards.items():
            t0 = time.perf_counter()
            fn(*args, x, steps).block_until_ready()
            times[dtype].append(time.perf_counter() - t0)
    seconds = {dtype: {"median_s": round(statistics.median(v), 3), "all_s": [round(s, 3) for s in v]}
               for dtype, v in times.items()}
    return {"base_forward": errors, "base_step_seconds": seconds}


def embedded_samples(seed: int = 0) -> dict:
    """Pixel differences between bf16 and f32 samples of the embedded base model (its recommended sampler)."""
    import numpy as np

    from glide_jax.sampling.loading import load_pipeline

    images, sampler = {}, None
    for dtype in DTYPES:
        pipe = load_pipeline("embedded-base", None, dtype=dtype)
        sampler = pipe.base.sampling
        images[dtype] = np.asarray(pipe.generate(list(PROMPTS), seed=seed, upsample=None), np.int16)
    difference = np.abs(images["bfloat16"] - images["float32"])
    return {"sampler": f"{sampler.sampler} x {sampler.steps}" if sampler else "package default",
            "images": int(difference.shape[0]), "image_size": int(difference.shape[1]), "seed": seed,
            "max_abs_pixel_difference": int(difference.max()),
            "share_of_pixel_values_differing": round(float((difference > 0).mean()), 4),
            "share_differing_by_more_than_8": round(float((difference > 8).mean()), 4),
            "mean_abs_pixel_difference": round(float(difference.mean()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed base steps per dtype (alternated)")
    ap.add_argument("--skip-base", action="store_true", help="skip the full-size base (forward errors and timing)")
    ap.add_argument("--skip-embedded", action="store_true", help="skip the embedded base's whole samples")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps must be at least 1, got {args.reps}")
    out = {}
    if not args.skip_embedded:
        out["embedded_sample"] = embedded_samples()
    if not args.skip_base:
        out.update(base_forwards(reps=args.reps))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
