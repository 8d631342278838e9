"""Turn finished training workdirs into embedded model directories (``glide_jax/assets/embedded`` by default).

    python -m projects.shapes.export_embedded --base runs/shapes/base_three_relations \\
        --upsample runs/shapes/upsample --inpaint runs/shapes/inpaint --clip runs/shapes/clip [--overwrite] \\
        [--fast runs/shapes/distill_4] \\
        [--out DIR] [--sampling base='{"sampler": "ddpm", "steps": 50}'] [--note base='...']

Each workdir's newest readable EMA weights are written as a model directory
(:func:`glide_jax.hub.model_dir.save_model_dir`, float16 parameters) with the
run's ``tokenizer.model`` and a provenance card: the config file and variant
the run ended with, the checkpoint's step, the training images seen, the data
settings and the wall-clock hours the run's metrics log accounts for
(``logged_from_step`` says where that log starts). A diffusion model trained on
part of the shapes relations gets ``prompt_rewrites`` in its ``sampling.json``
that say the other direction of an axis with its converse
(:func:`projects.shapes.restate.rewrite_rules`). Only the kinds given are
written; existing folders are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from glide_jax.errors import InputError
from glide_jax.hub.embedded import ROLES

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path("projects") / "shapes" / "configs"


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


def config_file_of(name: str) -> Optional[str]:
    """The project config (``path.py:variant``) an experiment named ``stem:variant`` or ``stem`` was run
    with, or None when the project has no such file."""
    stem, sep, variant = (name or "").partition(":")
    if not stem or not (REPO / CONFIG_DIR / f"{stem}.py").is_file():
        return None
    return f"{(CONFIG_DIR / stem).as_posix()}.py{sep}{variant}"


def _provenance(workdir: Path, step: int) -> dict:
    """What the workdir says about the run up to ``step``: config, batch, images seen, logged hours."""
    exp = json.loads((workdir / "experiment.json").read_text())
    batch = int(exp.get("train", {}).get("batch_size") or 0)
    info = {"experiment": exp.get("name"), "task": exp.get("task")}
    config_file = config_file_of(exp.get("name"))
    if config_file:
        info["config_file"] = config_file
    info.update({"batch_size": batch, "steps": step, "images_seen": step * batch,
                 "data": {k: _portable(v) for k, v in exp.get("data", {}).items()}})
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

    from glide_jax.hub.checkpoint_layout import checkpoint_dir

    directory = checkpoint_dir(workdir)
    if not directory.exists():
        raise FileNotFoundError(f"{workdir} holds no training checkpoints")
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False)) as m:
        steps = m.all_steps()
    if not steps:
        raise FileNotFoundError(f"{directory} holds no finished checkpoint")
    return int(max(steps))


def sampling_for(kind: str, sampling: Optional[dict], relations) -> Optional[dict]:
    """``sampling`` checked against the sampling-file format, with the prompt rewrites of a diffusion
    model trained on part of the relations added unless it names its own."""
    from glide_jax.sampling.advice import REWRITES_KEY, SamplingAdvice
    from projects.shapes.restate import rewrite_rules

    out = dict(sampling or {})
    if kind != "clip" and relations is not None and REWRITES_KEY not in out:
        rules = rewrite_rules(relations)
        if rules:
            out[REWRITES_KEY] = rules
    if not out:
        return None
    if kind == "clip":
        raise InputError("clip: a CLIP model has no sampling settings")
    advice = SamplingAdvice.from_json(out, f"--sampling {kind}")
    if advice.stage is not None:
        advice.stage.validate(kind)
    return out


def export(kind: str, workdir, out_dir, overwrite: bool = False, note: str = "", sampling=None) -> dict:
    from glide_jax.hub.model_dir import save_model_dir
    from glide_jax.hub.workdir import load_workdir

    workdir = Path(workdir)
    tokenizer = workdir / "tokenizer.model"
    if not tokenizer.exists():
        raise FileNotFoundError(f"{workdir} has no tokenizer.model (embedded models use their run's sentencepiece)")
    step = latest_step(workdir)
    config, params, _ = load_workdir(workdir, step)
    info = _provenance(workdir, step)
    if note:
        info["note"] = note
    data = info["data"]
    relations = data.get("shapes", data).get("relations")  # data.shapes, or flat in workdirs saved before it
    settings = sampling_for(kind, sampling, None if relations is None else tuple(relations))
    stats = save_model_dir(Path(out_dir) / kind, config, params, dtype="float16", tokenizer_file=tokenizer,
                           sampling=settings, card=info, overwrite=overwrite)
    return {**info, **stats}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from glide_jax.hub import embedded

    p = argparse.ArgumentParser(prog="python -m projects.shapes.export_embedded",
                                description=__doc__.split("\n\n")[0])
    for kind in ROLES:
        what = "few-step (distilled) base" if kind == "fast" else kind
        p.add_argument(f"--{kind}", default=None, help=f"training workdir of the {what} model")
    p.add_argument("--out", default=str(embedded.ASSET_DIR),
                   help="folder to write the model folders into (default: the package's assets)")
    p.add_argument("--overwrite", action="store_true", help="replace existing model folders")
    p.add_argument("--note", action="append", default=[], metavar="KIND=TEXT",
                   help="a remark stored in that model's provenance card")
    p.add_argument("--sampling", action="append", default=[], metavar="KIND=JSON",
                   help='recommended sampling, e.g. base=\'{"sampler": "ddpm", "steps": 50, "guidance_scale": 3}\'')
    args = p.parse_args(argv)
    chosen = {k: getattr(args, k) for k in ROLES if getattr(args, k)}
    if not chosen:
        print("error: give at least one of " + ", ".join(f"--{k}" for k in ROLES), file=sys.stderr)
        return 2
    try:
        notes = dict(_key_value(n, "--note") for n in args.note)
        sampling = {k: json.loads(v) for k, v in (_key_value(x, "--sampling") for x in args.sampling)}
        unknown = (set(notes) | set(sampling)) - set(chosen)
        if unknown:
            raise InputError(f"--note/--sampling for a kind that is not exported: {', '.join(sorted(unknown))}")
        for kind, workdir in chosen.items():
            out = export(kind, workdir, args.out, args.overwrite, notes.get(kind, ""), sampling.get(kind))
            print(json.dumps({kind: out}))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _key_value(text: str, flag: str):
    if "=" not in text:
        raise InputError(f"{flag} expects KIND=VALUE, got {text!r}")
    return tuple(text.split("=", 1))


if __name__ == "__main__":
    sys.exit(main())
