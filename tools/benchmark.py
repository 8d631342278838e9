"""Benchmarks, one subcommand each; prints JSON.

``python -m tools.benchmark train`` measures the training step on this machine
(images/s, and achieved GFLOP/s from the compiled step's ``cost_analysis()``)
for the tiny and the released-size base configs, and estimates the paper-scale
configs on a TPU v4 pod from an *ahead-of-time compilation* of their sharded
step: the step is lowered for a mesh of fake CPU devices (no array is ever
allocated), and XLA's cost and memory analyses of the per-device program give
FLOPs and bytes per chip. The step time follows from assumed hardware numbers
(``--peak-tflops``, ``--mfu``, ``--ici-gbps``), all reported with the result.

``python -m tools.benchmark sample`` times full-size sampling (see
``tools/benchmark_sample.py``); ``python -m tools.benchmark quality`` measures
each sampler's held-out accuracy against its cost (``tools/benchmark_quality.py``). Subcommands are registered in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "experiments" / "configs"

# TPU v4 (per chip): 275 TFLOP/s bf16 peak, 32 GiB HBM. MFU and the ICI all-gather bandwidth are assumptions.
TPU_V4 = {"peak_tflops": 275.0, "hbm_gib": 32.0}


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _load(name: str, overrides: List[str]):
    from glide_jax.train.experiment import apply_overrides, load_config_file

    family, _, variant = name.rpartition("_")  # "base_tiny": variant "tiny" of experiments/configs/base.py
    return apply_overrides(load_config_file(f"{CONFIG_DIR / family}.py:{variant}"), overrides)


def synthetic_batch(cfg, batch_size: int) -> Dict[str, Any]:
    import numpy as np

    from glide_jax.family import family_of

    family = family_of(cfg.model)
    rng = np.random.default_rng(0)
    s, ctx = family.image_size(cfg.model), family.text_length(cfg.model)
    lens = np.full((batch_size,), ctx // 2, np.int32)
    text = {"tokens": rng.integers(1, 100, (batch_size, ctx)).astype(np.int32), "lens": lens,
            "mask": np.arange(ctx)[None] < lens[:, None]}
    batch = {"image": (rng.integers(0, 256, (batch_size, s, s, 3)) / 127.5 - 1).astype(np.float32)}
    batch.update({k: text[k] for k in family.text_keys})
    batch.update(family.synthetic_conditioning(cfg.model, batch_size, rng))
    return batch


def _cost(compiled) -> Dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    mem = compiled.memory_analysis()
    out = {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}
    if mem is not None:
        for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes"):
            out[k] = int(getattr(mem, k, 0))
        out["peak_bytes_estimate"] = out["argument_size_in_bytes"] + out["output_size_in_bytes"] - \
            out["alias_size_in_bytes"] + out["temp_size_in_bytes"]
    return out


def compile_step(cfg, mesh, batch_size: int):
    """AOT-compile the sharded train step of ``cfg``'s task from abstract shapes only (no state is allocated);
    returns ``(compiled, init_fn, abstract_state, seconds)``."""
    import jax

    from glide_jax.train import sharding as sh
    from glide_jax.train import state as state_lib
    from glide_jax.train.loop import build_state
    from glide_jax.train.tasks import task_named

    tx = state_lib.make_optimizer(cfg.train)
    init, shardings, abstract = build_state(cfg, mesh, tx)
    bsh = sh.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh) for k, v in synthetic_batch(cfg, 1).items()}
    batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype, sharding=bsh) for k, v in batch.items()}
    # The task's step: a distillation task's differs from its family's (and its state holds the teacher).
    step = sh.jit_step(task_named(cfg.task).train_step(cfg, tx, mesh=mesh), shardings, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(abstract, batch).compile()
    return compiled, init, abstract, time.perf_counter() - t0


def measure_train(name: str, batch_size: int, steps: int, overrides: List[str]) -> Dict[str, Any]:
    """Compile and run the train step of config ``name`` on this machine's first device."""
    import dataclasses

    import jax

    from glide_jax.data.input_pipeline import global_batch
    from glide_jax.family import family_of
    from glide_jax.train import sharding as sh
    from glide_jax.train.experiment import MeshConfig
    from glide_jax.train.state import param_count

    cfg = _load(name, overrides)
    cfg = dataclasses.replace(cfg, mesh=MeshConfig(data=1), train=dataclasses.replace(cfg.train, batch_size=batch_size))
    mesh = sh.make_mesh(cfg.mesh, jax.devices()[:1])
    compiled, init, abstract, compile_s = compile_step(cfg, mesh, batch_size)
    state = init()
    batch = global_batch(synthetic_batch(cfg, batch_size), sh.batch_sharding(mesh))
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    cost = _cost(compiled)
    return {
        "config": name,
        "device": str(jax.devices()[0].device_kind),
        "params": param_count(abstract.params),
        "image_size": family_of(cfg.model).image_size(cfg.model),
        "batch_size": batch_size,
        "dtype": family_of(cfg.model).compute_dtype(cfg.model),
        "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 4),
        "images_per_s": round(batch_size / step_s, 2),
        "gflop_per_step": round(cost["flops"] / 1e9, 2),
        "achieved_gflops": round(cost["flops"] / step_s / 1e9, 2),
        "host_peak_gib_estimate": round(cost.get("peak_bytes_estimate", 0) / 2**30, 3),
        "loss": float(metrics["loss"]),
    }


def pod_worker(name: str, per_shard_batch: int, mesh_devices: int, tensor: int, overrides: List[str]) -> Dict[str, Any]:
    """Runs inside a process with ``mesh_devices`` fake CPU devices: per-device cost of the sharded step
    on a (fsdp = mesh_devices / tensor, tensor) mesh, ``per_shard_batch`` images per fsdp shard."""
    import dataclasses

    import jax

    from glide_jax.train import sharding as sh
    from glide_jax.train.experiment import MeshConfig
    from glide_jax.train.state import param_count

    cfg = _load(name, overrides)
    batch = per_shard_batch * (mesh_devices // tensor)
    cfg = dataclasses.replace(cfg, mesh=MeshConfig(data=1, fsdp=-1, tensor=tensor),
                              train=dataclasses.replace(cfg.train, batch_size=batch))
    mesh = sh.make_mesh(cfg.mesh, jax.devices()[:mesh_devices])
    compiled, _, abstract, compile_s = compile_step(cfg, mesh, batch)
    cost = _cost(compiled)
    # State bytes per device on the compile mesh, and what they become when fsdp spans the whole pod.
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    per_dev_state = sum(
        math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(abstract)
    )
    return {"config": name, "params": param_count(abstract.params), "state_bytes": state_bytes,
            "microbatches": cfg.train.microbatches,
            "compile_mesh_devices": mesh_devices, "per_device_state_bytes_compile_mesh": per_dev_state,
            "compile_s": round(compile_s, 1), **cost}


def estimate_pod(name: str, chips: int, global_batch: int, mesh_devices: int, tensor: int, peak_tflops: float,
                 mfu: float, ici_gbps: float, overrides: List[str]) -> Dict[str, Any]:
    """Per-chip memory and step time of config ``name`` on ``chips`` TPU v4 chips, mesh (fsdp, tensor)."""
    fsdp = chips // tensor
    per_shard = global_batch // fsdp
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={mesh_devices}")
    cmd = [sys.executable, "-m", "tools.benchmark", "pod-worker", name, "--per-shard-batch", str(per_shard),
           "--mesh-devices", str(mesh_devices), "--tensor", str(tensor)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pod worker failed:\n{proc.stderr[-3000:]}")
    w = json.loads(proc.stdout.strip().splitlines()[-1])
    # The compiled per-device program already has the pod's per-chip batch; only the state shards shrink
    # further when fsdp spans all chips instead of the compile mesh.
    state_pod = w["state_bytes"] / chips
    state_compile = w["per_device_state_bytes_compile_mesh"]
    activation_and_temp = w["temp_size_in_bytes"]
    # Arguments are the state shard (+ batch); the new state is written over the donated one (aliased).
    batch_bytes = w["argument_size_in_bytes"] - state_compile
    per_chip_bytes = state_pod + batch_bytes + activation_and_temp + max(w["output_size_in_bytes"] - w["alias_size_in_bytes"], 0)
    # XLA counts a while-loop body once: with gradient accumulation the forward/backward sits in a
    # scan of `microbatches` iterations, so scale (the optimiser update outside it is negligible).
    flops = w["flops"] * w["microbatches"]
    compute_s = flops / (peak_tflops * 1e12 * mfu)
    # FSDP traffic per chip per step: all-gather params for forward and backward (x2) plus
    # reduce-scatter of gradients (x1), each moving ~the float32 parameter bytes of a tensor group.
    param_bytes = 4 * w["params"] / tensor
    comm_s = 3 * param_bytes / (ici_gbps * 1e9)
    return {
        "config": name,
        "params_billion": round(w["params"] / 1e9, 3),
        "chips": chips,
        "mesh": {"data": 1, "fsdp": fsdp, "tensor": tensor},
        "global_batch": global_batch,
        "images_per_fsdp_shard": per_shard,
        "microbatches": w["microbatches"],
        "compiled_on": f"{mesh_devices} fake CPU devices (fsdp={mesh_devices // tensor}, tensor={tensor}), "
                       f"{w['compile_s']}s",
        "tflop_per_chip_per_step": _sig(flops / 1e12),
        "state_gib_per_chip": _sig(state_pod / 2**30),
        "state_gib_per_device_on_compile_mesh": _sig(state_compile / 2**30),
        "activations_temp_gib_per_chip": _sig(activation_and_temp / 2**30),
        "peak_hbm_gib_per_chip_estimate": _sig(per_chip_bytes / 2**30),
        "fits_hbm": per_chip_bytes / 2**30 < TPU_V4["hbm_gib"],
        "compute_s_per_step": _sig(compute_s),
        "fsdp_comm_s_per_step_if_not_overlapped": _sig(comm_s),
        "step_s_estimate": _sig(max(compute_s, comm_s)),
        "images_per_s_estimate": _sig(global_batch / max(compute_s, comm_s)),
        "assumptions": {"peak_bf16_tflops_per_chip": peak_tflops, "mfu": mfu, "ici_allgather_gbytes_per_s": ici_gbps,
                        "hbm_gib_per_chip": TPU_V4["hbm_gib"]},
    }


def cmd_train(args) -> Dict[str, Any]:
    out: Dict[str, Any] = {"host": {"cpu_count": os.cpu_count()}, "measured": [], "pod_estimates": []}
    for spec in args.measure:
        name, batch = spec.split(":") if ":" in spec else (spec, "8")
        out["measured"].append(measure_train(name, int(batch), args.steps, args.set))
        print(json.dumps(out["measured"][-1]), file=sys.stderr, flush=True)
    for spec in args.pod:
        name, batch = spec.split(":")
        est = estimate_pod(name, args.chips, int(batch), args.mesh_devices, args.tensor, args.peak_tflops,
                           args.mfu, args.ici_gbps, args.set)
        out["pod_estimates"].append(est)
        print(json.dumps(est), file=sys.stderr, flush=True)
    return out


def cmd_pod_worker(args) -> Dict[str, Any]:
    return pod_worker(args.config, args.per_shard_batch, args.mesh_devices, args.tensor, args.set)


def cmd_sample(args) -> Dict[str, Any]:
    from tools.benchmark_sample import run

    return run(args)


def cmd_quality(args) -> Dict[str, Any]:
    from tools.benchmark_quality import main as quality

    return quality(args)


COMMANDS: Dict[str, Callable] = {"train": cmd_train, "pod-worker": cmd_pod_worker, "sample": cmd_sample,
                                 "quality": cmd_quality}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train-step throughput here and paper-scale estimates on a TPU v4 pod")
    t.add_argument("--measure", nargs="*", default=["base_tiny:32", "base_released:2"],
                   help="CONFIG:BATCH to compile and run on this machine")
    t.add_argument("--steps", type=int, default=3, help="timed steps per measured config")
    t.add_argument("--pod", nargs="*", default=["base_paper:2048", "upsample_paper:512"],
                   help="CONFIG:GLOBAL_BATCH to estimate on the pod")
    t.add_argument("--chips", type=int, default=256, help="TPU v4 chips (fsdp spans all of them)")
    t.add_argument("--tensor", type=int, default=1, help="tensor-parallel size of the pod mesh")
    t.add_argument("--mesh-devices", type=int, default=8,
                   help="fake CPU devices to compile the per-chip program on (same images per fsdp shard)")
    t.add_argument("--peak-tflops", type=float, default=TPU_V4["peak_tflops"])
    t.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
    t.add_argument("--ici-gbps", type=float, default=100.0, help="assumed all-gather bandwidth per chip, GB/s")
    t.add_argument("--set", action="append", default=[], help="config override applied to every config")
    s = sub.add_parser("sample", help="full-size base/upsample sampling: step time, compile time, GFLOP/s, peak RSS")
    s.add_argument("--loop-steps", type=int, default=5, help="steps of the timed sampling loop (default 5)")
    s.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end 256x256 timing")
    q = sub.add_parser("quality", help="time to a correct image: held-out accuracy and cost of each sampler setting")
    from tools.benchmark_quality import add_arguments

    add_arguments(q)
    w = sub.add_parser("pod-worker", help=argparse.SUPPRESS)
    w.add_argument("config")
    w.add_argument("--per-shard-batch", type=int, required=True)
    w.add_argument("--mesh-devices", type=int, required=True)
    w.add_argument("--tensor", type=int, default=1)
    w.add_argument("--set", action="append", default=[])
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(COMMANDS[args.command](args), indent=None if args.command == "pod-worker" else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
