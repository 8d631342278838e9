"""Device memory of a training step, read from XLA's memory analysis of the compiled step.

    python -m tools.memory_table --configs base:released upsample:released --batch 1 4 16 \\
        --dtype float32 bfloat16 --remat off on > memory.jsonl
    python -m tools.memory_table --markdown memory.jsonl

Each row compiles the train step of one config (``family:variant`` of
``experiments/configs``) for a single device, ahead of time from abstract
shapes: the state comes from ``jax.eval_shape`` and the batch is
``jax.ShapeDtypeStruct``s, so nothing of the model's size is allocated and the
full-size models can be measured on a small host. From
``compiled.memory_analysis()`` it reports

    peak = argument_size + output_size + temp_size - alias_size

the bytes of the step's inputs (state and batch), its outputs (new state and
metrics) and its scratch buffers (activations kept for the backward pass,
gradients, optimiser temporaries), minus the outputs written over donated
inputs (the state is donated, so the new state reuses its buffers). The
numbers are XLA's buffer assignment for the backend it compiled for (here
XLA:CPU); a GPU or TPU compilation fuses and schedules differently, so treat
them as estimates. Rows are printed as JSON lines as they finish, so a run cut
short by ``timeout`` keeps what it measured; ``--markdown`` renders them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "experiments" / "configs"
GIB = 2**30
# Memory of the accelerators the table is read against, GiB (GPUs by their marketed size).
DEVICES_GIB = {"GPU 16 GB": 16.0, "GPU 24 GB": 24.0, "GPU 40 GB": 40.0, "GPU 80 GB": 80.0,
               "TPU v5e (16 GiB)": 16.0, "TPU v4 (32 GiB)": 32.0}
# Share of a device's memory a step may plan for: the rest goes to the runtime (CUDA context, cuDNN
# workspaces, fragmentation) and to what XLA:CPU's analysis does not see on another backend.
USABLE_SHARE = 0.9
MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")


def load(spec: str, overrides: Sequence[str] = ()):
    """The experiment config ``family:variant`` (e.g. ``base:released``), with ``--set`` overrides."""
    from glide_jax.train.experiment import apply_overrides, load_config_file

    family, colon, variant = spec.partition(":")
    if not colon or not family or not variant:
        raise ValueError(f"config {spec!r}: write family:variant, e.g. base:released")
    return apply_overrides(load_config_file(f"{CONFIG_DIR / family}.py:{variant}"), list(overrides))


def configure(cfg, *, dtype: str, remat: bool, batch_size: int, microbatches: int = 1):
    """``cfg`` with the U-Net's compute dtype and remat, the batch and its microbatches, on one device."""
    from glide_jax.train.experiment import MeshConfig

    unet = dataclasses.replace(cfg.model.unet, dtype=dtype, remat=remat)
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, unet=unet),
        train=dataclasses.replace(cfg.train, batch_size=batch_size, microbatches=microbatches),
        mesh=MeshConfig(data=1, fsdp=1, tensor=1),
    )


def step_memory(cfg) -> Dict[str, Any]:
    """Compile ``cfg``'s train step for this host's first device and report its memory analysis (bytes)."""
    import jax

    from glide_jax.train import sharding as sh
    from glide_jax.train.state import param_count
    from tools.benchmark import compile_step

    mesh = sh.make_mesh(cfg.mesh, jax.devices()[:1])
    compiled, _, abstract, compile_s = compile_step(cfg, mesh, cfg.train.batch_size)
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis")
    out: Dict[str, Any] = {k: int(getattr(analysis, k)) for k in MEMORY_FIELDS}
    out["peak_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                         + out["temp_size_in_bytes"] - out["alias_size_in_bytes"])
    out["state_bytes"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    out["params"] = param_count(abstract.params)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # XLA counts a loop body once: with microbatches this is one slice's work plus the update.
    out["flops"] = float((cost or {}).get("flops", 0.0))
    out["compile_s"] = round(compile_s, 1)
    out["backend"] = jax.default_backend()
    return out


def measure(spec: str, batch_size: int, dtype: str, remat: bool, microbatches: int = 1,
            overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """One row of the table: ``spec`` at this batch, dtype, remat and gradient accumulation."""
    cfg = configure(load(spec, overrides), dtype=dtype, remat=remat, batch_size=batch_size,
                    microbatches=microbatches)
    row = {"config": spec, "batch_size": batch_size, "microbatches": microbatches, "dtype": dtype, "remat": remat}
    row.update(step_memory(cfg))
    return row


def fits(peak_bytes: int) -> List[str]:
    """The devices of ``DEVICES_GIB`` whose usable share holds ``peak_bytes``."""
    return [name for name, gib in DEVICES_GIB.items() if peak_bytes <= USABLE_SHARE * gib * GIB]


def markdown(rows: Iterable[Dict[str, Any]]) -> str:
    """A table of measured rows: GiB per device and the smallest GPU and TPU chip that hold the step."""
    lines = ["| config | dtype | remat | batch | state GiB | temp GiB | peak GiB | smallest GPU | TPU chip | compile |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in rows:
        ok = fits(r["peak_bytes"])
        gpu = next((n for n in ok if n.startswith("GPU")), "none of 16-80 GB")
        tpu = next((n.split(" (")[0] for n in ok if n.startswith("TPU")), "neither")
        batch = f"{r['batch_size']}" + (f" ({r['microbatches']} x {r['batch_size'] // r['microbatches']})"
                                        if r.get("microbatches", 1) > 1 else "")
        lines.append(f"| `{r['config']}` | {r['dtype']} | {'on' if r['remat'] else 'off'} | {batch} | "
                     f"{r['state_bytes'] / GIB:.2f} | {r['temp_size_in_bytes'] / GIB:.2f} | "
                     f"{r['peak_bytes'] / GIB:.2f} | {gpu} | {tpu} | {r['compile_s']:.0f} s |")
    return "\n".join(lines)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"--remat takes on or off, got {text!r}")
    return text == "on"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.memory_table", description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["base:released", "upsample:released"],
                   help="family:variant of experiments/configs")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4, 16], help="images per step")
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"],
                   help="U-Net compute dtypes (parameters stay float32)")
    p.add_argument("--remat", nargs="+", type=_on_off, default=[False, True], help="on / off")
    p.add_argument("--microbatches", type=int, default=1, help="gradient accumulation slices of each batch")
    p.add_argument("--set", action="append", default=[], help="config override applied to every config")
    p.add_argument("--markdown", metavar="JSONL", help="render rows measured earlier instead of measuring")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.markdown:
        path = Path(args.markdown)
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        print(markdown(json.loads(line) for line in path.read_text().splitlines() if line.strip()))
        return 0
    bad = [b for b in args.batch if b < 1 or b % args.microbatches]
    if bad:
        print(f"error: batch sizes {bad} are not positive multiples of --microbatches {args.microbatches}",
              file=sys.stderr)
        return 2
    try:
        configs = {spec: load(spec, args.set) for spec in args.configs}  # bad names fail before compiling
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for spec in configs:
        for dtype in args.dtype:
            for remat in args.remat:
                for batch in args.batch:
                    print(json.dumps(measure(spec, batch, dtype, remat, args.microbatches, args.set)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
