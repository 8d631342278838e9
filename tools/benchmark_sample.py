"""Sampling benchmark of the full-size models (random weights): ``python -m tools.benchmark sample``.

For each model (``base`` at 64×64 with classifier-free guidance, ``upsample`` at
256×256) it measures, in a fresh subprocess so peak RSS is per model: the U-Net
forward's compile time, seconds per sampling step, the forward's FLOPs (from
XLA's cost analysis) and achieved GFLOP/s next to this machine's measured JAX
f32 matmul rate, the whole sampling loop's compile time, images/s, and peak RSS.
It also times one 256×256 image end to end with the pipeline defaults.
Prints JSON.

``--attention-shapes`` times each attention implementation on the full-size
``base``'s attention shapes (batch 2) and reports its max abs difference from
the einsum implementation, per shape and summed over one forward's layers.

``--versus-torch PYTHON --reference DIR`` instead times the full-size ``base``
classifier-free-guidance step (a batch-2 forward at 64×64, random weights) in
JAX and in OpenAI's PyTorch reference (``DIR`` holds its ``glide_text2im``
package, ``PYTHON`` is an interpreter with torch), alternating the two in fresh
subprocesses for ``--rounds`` rounds, both on ``--threads`` threads, and reports
every round and the medians. ``--before DIR`` adds a third side in the same
rounds: the same JAX timing of the glide_jax package in another checkout, for a
before/after comparison of a change. The reference caches the encoded caption
(``cache_text_emb``) so both sides time the same work: the U-Net with the text
already encoded. The torch side imports nothing of glide_jax.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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


def random_model(preset: str):
    """Random weights filled leaf by leaf from the abstract shapes, so peak memory is the weights alone
    (a jitted ``init`` of the full model briefly holds more than twice that)."""
    import jax
    import numpy as np

    from glide_jax.config import get_preset
    from glide_jax.family import abstract_params

    cfg = get_preset(preset)
    shapes = {"params": abstract_params(cfg)}
    rng = np.random.default_rng(0)

    def fill(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jax.numpy.asarray((rng.standard_normal(leaf.shape, np.float32) / np.sqrt(max(fan_in, 1))))

    return cfg, jax.tree_util.tree_map(fill, shapes)


class FixedTokens:
    """A tokenizer giving every caption the same four tokens (none for an empty one): timings of the
    full-size models measure the networks, and random weights have no vocabulary to respect."""

    def encode_batch(self, prompts, ctx):
        import numpy as np

        tokens = np.zeros((len(prompts), ctx), np.int32)
        mask = np.zeros((len(prompts), ctx), bool)
        for i, p in enumerate(prompts):
            mask[i, :4] = bool(p)
        return tokens, mask


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
    from glide_jax.families.unet import unet_apply, unet_model_fn

    cfg, params = random_model(preset)
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

    base_cfg, base_params = random_model("base")
    up_cfg, up_params = random_model("upsample")
    pipe = Pipeline(LoadedModel(base_cfg, base_params, FixedTokens()), LoadedModel(up_cfg, up_params, FixedTokens()))
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


def base_attention_shapes() -> dict:
    """``{name: (layers per forward, T, S, heads, head width)}`` of the full-size ``base`` at batch 2."""
    from glide_jax.config import get_preset

    unet = get_preset("base").unet
    ctx, size = unet.text.text_ctx, unet.image_size
    shapes = {}
    for ds in unet.attention_ds:
        level = [2**i for i in range(len(unet.channel_mult))].index(ds)
        channels = int(unet.channel_mult[level] * unet.num_channels)
        heads = unet.heads_for(channels, False)
        per_level = 2 * unet.num_res_blocks + 1 + (ds == max(unet.attention_ds))  # encoder + decoder (+ middle)
        tokens = (size // ds) ** 2
        shapes[f"unet_{size // ds}x{size // ds}"] = (per_level, tokens, tokens + ctx, heads, channels // heads)
    text = unet.text
    shapes["text"] = (text.layers, ctx, ctx, text.heads, text.width // text.heads)
    return shapes


IMPLEMENTATIONS_TIMED = ("einsum", "xla")  # what runs on CPU; cuDNN needs a GPU


def bench_attention(reps: int, dtype: str = "float32") -> dict:
    """Median seconds of each attention implementation on the base's shapes, and its max abs difference."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from glide_jax.models import layers

    compute = layers.compute_dtype(dtype)
    results, totals = {}, {}
    for name, (count, t, s, heads, width) in base_attention_shapes().items():
        keys = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(keys[0], (2, t, heads, width)).astype(compute)
        k, v = (jax.random.normal(key, (2, s, heads, width)).astype(compute) for key in keys[1:])
        row = {"layers_per_forward": count, "q": [2, t, heads, width], "kv": [2, s, heads, width]}
        runs, outputs, times = {}, {}, {}
        for implementation in IMPLEMENTATIONS_TIMED:
            fn = jax.jit(lambda q, k, v, implementation=implementation: layers.attention(q, k, v, None, implementation))
            outputs[implementation] = np.asarray(fn(q, k, v).astype(jnp.float32))
            runs[implementation] = lambda fn=fn: fn(q, k, v).block_until_ready()
            times[implementation] = []
        for _ in range(reps):  # alternated, so a change in the machine's load hits every implementation alike
            for implementation, run in runs.items():
                times[implementation].append(_time(run, 1))
        for implementation in runs:
            seconds = statistics.median(times[implementation])
            difference = np.abs(outputs[implementation] - outputs[IMPLEMENTATIONS_TIMED[0]]).max()
            row[implementation] = {"ms": round(1e3 * seconds, 2), "max_abs_diff": float(difference)}
            totals[implementation] = totals.get(implementation, 0.0) + count * seconds
        results[name] = row
    return {"dtype": dtype, "shapes": results, "ms_per_forward": {k: round(1e3 * v, 1) for k, v in totals.items()}}


def bench_base_step(reps: int, dtype: str = "float32") -> dict:
    """Seconds per full-size ``base`` CFG step in JAX (batch-2 forward with the caption encoded once)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from glide_jax.families.unet import unet_apply, unet_model_fn

    cfg, params = random_model("base")
    unet = dataclasses.replace(cfg.unet, dtype=dtype)
    rows, size = 2, unet.image_size
    tokens = jnp.zeros((rows, unet.text.text_ctx), jnp.int32)
    mask = jnp.zeros((rows, unet.text.text_ctx), bool).at[:, :4].set(True)
    model_fn = unet_model_fn(unet, params, tokens, mask)
    x = jax.random.normal(jax.random.key(1), (rows, size, size, 3))
    t = jnp.full((rows,), 500, jnp.int32)
    forward = jax.jit(unet_apply(unet))
    run = lambda: forward(*model_fn.args, x, t).block_until_ready()
    run()
    times = [_time(run, 1) for _ in range(reps)]
    import glide_jax

    return {"side": "jax", "dtype": dtype, "seconds": times, "glide_jax": os.path.dirname(glide_jax.__file__)}


def bench_torch_base_step(reference: str, reps: int, threads: int) -> dict:
    """Seconds per full-size ``base`` CFG step of OpenAI's PyTorch reference (eager, fp32)."""
    sys.path.insert(0, reference)
    import torch
    from glide_text2im.model_creation import create_model_and_diffusion, model_and_diffusion_defaults

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    options = dict(model_and_diffusion_defaults(), cache_text_emb=True, use_fp16=False)
    model, _ = create_model_and_diffusion(**options)
    model.eval()
    rows, size, ctx = 2, options["image_size"], options["text_ctx"]
    tokens = torch.zeros((rows, ctx), dtype=torch.long)
    mask = torch.zeros((rows, ctx), dtype=torch.bool)
    mask[:, :4] = True
    x = torch.randn(rows, 3, size, size)
    t = torch.full((rows,), 500, dtype=torch.long)
    with torch.no_grad():
        run = lambda: model(x, t, tokens=tokens, mask=mask)
        run()
        times = [_time(run, 1) for _ in range(reps)]
    return {"side": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": times}


def side_by_side(args) -> dict:
    """Alternate JAX and PyTorch base-step children for ``args.rounds`` rounds; medians of every step timed."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    jax_cmd = [sys.executable, "-m", "tools.benchmark_sample", "--child", "jax-base", "--reps", str(args.reps),
               "--dtype", args.dtype]
    torch_cmd = [args.versus_torch, "-m", "tools.benchmark_sample", "--child", "torch-base", "--reps", str(args.reps),
                 "--reference", args.reference, "--threads", str(args.threads)]
    sides = [("jax", jax_cmd, env), ("torch", torch_cmd, env)]
    if args.before:
        # This file run by path with the other checkout first on the path: its glide_jax, this timing code.
        before_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [args.before, env.get("PYTHONPATH")])))
        before_cmd = [sys.executable, os.path.abspath(__file__), "--child", "jax-base", "--reps", str(args.reps),
                      "--dtype", args.dtype]
        sides.insert(0, ("jax_before", before_cmd, before_env))
    rounds = []
    for _ in range(args.rounds):
        row = {}
        for side, cmd, side_env in sides:
            out = subprocess.run(cmd, capture_output=True, text=True, env=side_env)
            if out.returncode:
                raise RuntimeError(f"{side} base step failed:\n{out.stderr[-3000:]}")
            row[side] = json.loads(out.stdout.strip().splitlines()[-1])
        rounds.append(row)
    summary = {}
    for side, _, _ in sides:
        times = [s for row in rounds for s in row[side]["seconds"]]
        summary[side] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                         "max_s": round(max(times), 3), "steps_timed": len(times)}
    summary["jax"].update(dtype=rounds[0]["jax"]["dtype"])
    if args.before:
        summary["jax_before"].update(checkout=args.before, glide_jax=rounds[0]["jax_before"]["glide_jax"])
    summary["torch"].update(version=rounds[0]["torch"]["torch"], threads=rounds[0]["torch"]["threads"])
    return {"base_cfg_step": summary, "rounds": rounds}


def _child(args) -> int:
    if args.part == "jax-base":
        out = bench_base_step(args.reps, args.dtype)
    elif args.part == "torch-base":
        out = bench_torch_base_step(args.reference, args.reps, args.threads)
    elif args.part == "matmul":
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
    ap.add_argument("--versus-torch", metavar="PYTHON", default=None,
                    help="time the base CFG step side by side with the PyTorch reference run by this interpreter")
    ap.add_argument("--reference", metavar="DIR", default=None, help="folder holding the glide_text2im package")
    ap.add_argument("--before", metavar="DIR", default=None,
                    help="with --versus-torch, also time the JAX step of the glide_jax package in DIR (another "
                         "checkout, e.g. a git worktree of an earlier commit) in the same rounds")
    ap.add_argument("--rounds", type=int, default=3, help="side-by-side rounds, each a fresh process per side")
    ap.add_argument("--reps", type=int, default=3, help="side-by-side steps timed per process")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (JAX uses every core of the machine)")
    ap.add_argument("--dtype", default="float32", help="JAX compute dtype of the side-by-side (float32, bfloat16)")
    ap.add_argument("--attention-shapes", action="store_true",
                    help="time the attention implementations on the base's attention shapes")
    args = ap.parse_args(argv)
    if args.part:
        return _child(args)
    if args.attention_shapes:
        print(json.dumps(bench_attention(args.reps, args.dtype), indent=2))
        return 0
    if args.versus_torch:
        if not args.reference or not os.path.isdir(os.path.join(args.reference, "glide_text2im")):
            ap.error(f"--reference must be a folder holding glide_text2im, got {args.reference!r}")
        print(json.dumps(side_by_side(args), indent=2))
        return 0
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
