"""Turn finished training workdirs into the package's embedded models (``glide_jax/assets/embedded``).

    python -m tools.export_embedded --base runs/base_embedded --upsample runs/upsample_embedded \
        --inpaint runs/inpaint_embedded --clip runs/clip_embedded [--overwrite]

Each workdir's newest readable EMA weights are stored as float16 next to its
config and tokenizer (see :mod:`glide_jax.hub.embedded`), with a ``training.json``
that records the experiment config name, the checkpoint's step, the training
images seen, the data settings and the wall-clock hours the run's metrics log
accounts for (``logged_from_step`` says where that log starts). Only the kinds
given are written; existing folders are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence


def _portable(value):
    """Settings without this machine's paths: an absolute path keeps its file name, and so does any
    path after ``kind:`` (a file setting such as ``sentencepiece:runs/x/tokenizer.model``, whose file
    the exported folder ships under that name)."""
    if not isinstance(value, str):
        return value
    kind, sep, rest = value.rpartition(":") if ":" in value else ("", "", value)
    if Path(rest).is_absolute() or (sep and rest):
        return f"{kind}{sep}{Path(rest).name}"
    return value


def _provenance(workdir: Path, step: int) -> dict:
    """What the workdir says about the run up to ``step``: config name, batch, images seen, logged hours."""
    exp = json.loads((workdir / "experiment.json").read_text())
    batch = int(exp.get("train", {}).get("batch_size") or 0)
    info = {"experiment": exp.get("name"), "task": exp.get("task"),
            "config_file": f"experiments/configs/{exp.get('name')}.py", "batch_size": batch, "steps": step,
            "images_seen": step * batch, "data": {k: _portable(v) for k, v in exp.get("data", {}).items()}}
    metrics = workdir / "metrics.jsonl"
    rows = []
    if metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r.get("images_per_s") and r.get("step", 0) <= step), key=lambda r: r["step"])
    if rows and batch:
        # Each row's rate covers the steps since the previous row; the first row covers one log interval.
        gaps = [b["step"] - a["step"] for a, b in zip(rows, rows[1:])]
        first = min(gaps) if gaps else rows[0]["step"]
        secs = sum(g * batch / r["images_per_s"] for g, r in zip([first] + gaps, rows))
        info["logged_from_step"] = max(rows[0]["step"] - first, 0)
        info["logged_wall_hours"] = round(secs / 3600, 3)
    return info


def latest_step(workdir: Path) -> int:
    import orbax.checkpoint as ocp

    from glide_jax.train.checkpointing import checkpoint_dir

    directory = checkpoint_dir(workdir)
    if not directory.exists():
        raise FileNotFoundError(f"{workdir} holds no training checkpoints")
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False)) as m:
        steps = m.all_steps()
    if not steps:
        raise FileNotFoundError(f"{directory} holds no finished checkpoint")
    return int(max(steps))


def export(kind: str, workdir, out_dir, overwrite: bool = False, note: str = "", sampling=None) -> dict:
    from glide_jax.hub import embedded
    from glide_jax.train.checkpointing import load_for_sampling

    workdir = Path(workdir)
    tokenizer = workdir / "tokenizer.model"
    if not tokenizer.exists():
        raise FileNotFoundError(f"{workdir} has no tokenizer.model (embedded models use their run's sentencepiece)")
    step = latest_step(workdir)
    config, params = load_for_sampling(workdir, step)
    info = _provenance(workdir, step)
    if note:
        info["note"] = note
    if sampling:
        from glide_jax.sampling.pipeline import StageOptions

        StageOptions.from_dict({k: v for k, v in sampling.items() if k != "guidance_scale"}).validate(kind)
    stats = embedded.save_embedded(Path(out_dir) / kind, config, params, tokenizer, info, sampling=sampling,
                                   overwrite=overwrite)
    return {**info, **stats}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from glide_jax.hub import embedded

    p = argparse.ArgumentParser(prog="python -m tools.export_embedded", description=__doc__.split("\n\n")[0])
    for kind in embedded.KINDS:
        p.add_argument(f"--{kind}", default=None, help=f"training workdir of the {kind} model")
    p.add_argument("--out", default=str(embedded.ASSET_DIR), help="assets folder (default: the package's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing model folders")
    p.add_argument("--note", action="append", default=[], metavar="KIND=TEXT",
                   help="a remark stored in that model's training.json (e.g. how the run was resumed)")
    p.add_argument("--sampling", action="append", default=[], metavar="KIND=JSON",
                   help='recommended sampling, e.g. base=\'{"sampler": "ddpm", "steps": 50, "guidance_scale": 3}\'')
    args = p.parse_args(argv)
    chosen = {k: getattr(args, k) for k in embedded.KINDS if getattr(args, k)}
    if not chosen:
        print("error: give at least one of " + ", ".join(f"--{k}" for k in embedded.KINDS), file=sys.stderr)
        return 2
    try:
        notes = dict(n.split("=", 1) for n in args.note)
        sampling = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.sampling)}
        unknown = (set(notes) | set(sampling)) - set(chosen)
        if unknown:
            raise ValueError(f"--note/--sampling for a kind that is not exported: {', '.join(sorted(unknown))}")
        for kind, workdir in chosen.items():
            out = export(kind, workdir, args.out, args.overwrite, notes.get(kind, ""), sampling.get(kind))
            print(json.dumps({kind: out}))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
