"""Sampling benchmark of the full-size models (random weights): ``python -m tools.benchmark sample``.

For each model (``base`` at 64×64 with classifier-free guidance, ``upsample`` at
256×256) it measures, in a fresh subprocess so peak RSS is per model: the U-Net
forward's compile time, seconds per sampling step, the forward's FLOPs (from
XLA's cost analysis) and achieved GFLOP/s next to this machine's measured JAX
f32 matmul rate, the whole sampling loop's compile time, images/s, and peak RSS.
It also times one 256×256 image end to end with the pipeline defaults.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _random_model(preset: str):
    """Random weights filled leaf by leaf from the abstract shapes, so peak memory is the weights alone
    (a jitted ``init`` of the full model briefly holds more than twice that)."""
    import jax
    import numpy as np

    from glide_jax.config import get_preset
    from glide_jax.models.families import abstract_params

    cfg = get_preset(preset)
    shapes = {"params": abstract_params(cfg)}
    rng = np.random.default_rng(0)

    def fill(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jax.numpy.asarray((rng.standard_normal(leaf.shape, np.float32) / np.sqrt(max(fan_in, 1))))

    return cfg, jax.tree_util.tree_map(fill, shapes)


def _time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_model(preset: str, batch: int, loop_steps: int, reps: int = 3) -> dict:
    """Forward and short-loop timings of one model with random weights."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from glide_jax.diffusion import guidance as G
    from glide_jax.diffusion.samplers import sample_loop
    from glide_jax.diffusion.schedule import make_schedule
    from glide_jax.sampling.networks import unet_apply, unet_model_fn

    cfg, params = _random_model(preset)
    u = cfg.unet
    guided = not u.super_res
    rows = 2 * batch if guided else batch
    s = u.image_size
    tokens = jnp.zeros((rows, u.text.text_ctx), jnp.int32)
    mask = jnp.zeros((rows, u.text.text_ctx), bool).at[:, :4].set(True)
    cond = {"low_res": jnp.zeros((rows, cfg.low_res_size, cfg.low_res_size, 3))} if u.super_res else {}
    model_fn = unet_model_fn(u, params, tokens, mask, **cond)
    x = jax.random.normal(jax.random.key(1), (rows, s, s, 3))
    t = jnp.full((rows,), 500, jnp.int32)
    fwd = jax.jit(lambda p, te, c, x, t: unet_apply(u)(p, te, c, x, t))
    t0 = time.perf_counter()
    compiled = fwd.lower(model_fn.args[0], model_fn.args[1], model_fn.args[2], x, t).compile()
    fwd_compile = time.perf_counter() - t0
    flops = float(compiled.cost_analysis().get("flops", float("nan")))
    run = lambda: compiled(model_fn.args[0], model_fn.args[1], model_fn.args[2], x, t).block_until_ready()
    run()
    step = _time(run, reps)
    fn = G.classifier_free_guidance(model_fn, 3.0) if guided else model_fn
    sched = make_schedule(cfg.diffusion, respacing=str(loop_steps))
    loop = lambda seed: np.asarray(sample_loop(sched, fn, (rows, s, s, 3), sampler="ddpm", key=jax.random.key(seed)))
    t0 = time.perf_counter()
    loop(0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop(1)
    second = time.perf_counter() - t0
    return {
        "preset": preset,
        "image_size": s,
        "batch_images": batch,
        "forward_rows": rows,
        "classifier_free_guidance": guided,
        "forward_compile_s": round(fwd_compile, 2),
        "seconds_per_step": round(step, 3),
        "forward_gflop": round(flops / 1e9, 1),
        "achieved_gflops": round(flops / 1e9 / step, 1),
        "loop_steps": loop_steps,
        "loop_compile_s": round(max(first - second, 0.0), 2),
        "loop_seconds_per_step": round(second / loop_steps, 3),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
    }


def bench_end_to_end() -> dict:
    """One 256×256 image from a prompt with the pipeline's default samplers, cold and warm."""
    from glide_jax.sampling.pipeline import BASE_DEFAULT, UPSAMPLE_DEFAULT, LoadedModel, Pipeline

    class _Tok:  # fixed tokens: the benchmark measures the networks, not the tokenizer
        def encode_batch(self, prompts, ctx):
            import numpy as np

            tokens = np.zeros((len(prompts), ctx), np.int32)
            mask = np.zeros((len(prompts), ctx), bool)
            for i, p in enumerate(prompts):
                mask[i, :4] = bool(p)
            return tokens, mask

    base_cfg, base_params = _random_model("base")
    up_cfg, up_params = _random_model("upsample")
    pipe = Pipeline(LoadedModel(base_cfg, base_params, _Tok()), LoadedModel(up_cfg, up_params, _Tok()))
    t0 = time.perf_counter()
    pipe.generate(["a corgi"], seed=0, guidance_scale=3.0)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe.generate(["a fox"], seed=1, guidance_scale=3.0)
    warm = time.perf_counter() - t0
    return {
        "base_sampler": f"{BASE_DEFAULT.sampler} x {BASE_DEFAULT.steps}",
        "upsample_sampler": f"{UPSAMPLE_DEFAULT.sampler} x {UPSAMPLE_DEFAULT.steps}",
        "cold_s": round(cold, 1),
        "warm_s": round(warm, 1),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
    }


def _child(args) -> int:
    if args.part == "matmul":
        out = {"jax_f32_matmul_gflops": round(matmul_gflops(), 1)}
    elif args.part == "e2e":
        out = bench_end_to_end()
    else:
        out = bench_model(args.part, args.batch, args.loop_steps)
    print(json.dumps(out))
    return 0


def run(args) -> dict:
    parts = [("matmul", 1), ("base", 1), ("base", 4), ("upsample", 1)]
    if not args.skip_e2e:
        parts.append(("e2e", 1))
    results = {}
    for part, batch in parts:
        cmd = [sys.executable, "-m", "tools.benchmark_sample", "--child", part, "--batch", str(batch),
               "--loop-steps", str(args.loop_steps)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"benchmark part {part} failed:\n{out.stderr[-3000:]}")
        results[f"{part}_b{batch}" if part in ("base", "upsample") else part] = json.loads(out.stdout.strip().splitlines()[-1])
    base4 = results.get("base_b4")
    if base4:
        base4["images_per_s_100_steps"] = round(4 / (base4["seconds_per_step"] * 100), 4)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", dest="part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--loop-steps", type=int, default=5, help="steps of the timed sampling loop (default 5)")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end 256×256 timing")
    args = ap.parse_args(argv)
    if args.part:
        return _child(args)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
