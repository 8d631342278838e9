"""Grade a model on captioned-shapes prompts: generate, score every sample, print accuracy.

    python -m projects.shapes.eval_shapes --prompts heldout:128       # the embedded base, its own settings
    python -m projects.shapes.eval_shapes --prompts heldout:64 --model WORKDIR --guidance 3 --sampler ddim --steps 50
    python -m projects.shapes.eval_shapes --prompts captions.txt --model INPAINT_DIR --inpaint --json
    python -m projects.shapes.eval_shapes --relation-probe --model WORKDIR   # seconds: does "above" change anything?

``--prompts`` is a file with one caption a line, ``heldout:N`` for the first
N held-out captions of :mod:`glide_jax.data.shapes`, or ``single:N`` for N
one-object captions ("a small blue square"). With ``--inpaint`` each
caption's scene is rendered, one object erased and the model asked to fill it;
keep-region fidelity and fill accuracy are reported too. Prints a table of the
overall and per-attribute accuracy (``--json``: the aggregate as JSON); bad
input prints ``error: ...`` and exits with status 2. Thin wrapper over
:mod:`projects.shapes.evaluate` (generation), :mod:`projects.shapes.grading`
(scoring) and :mod:`projects.shapes.relation_probe`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Optional, Sequence

from glide_jax.diffusion.sampler_registry import sampler_names
from glide_jax.errors import InputError


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m projects.shapes.eval_shapes", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", default=None, help="file with one caption a line, heldout:N or single:N")
    p.add_argument("--relation-probe", action="store_true",
                   help="instead of sampling, measure how much the base model's high-noise image estimate "
                        "changes when a caption's relation is mirrored (projects.shapes.relation_probe)")
    p.add_argument("--probe-counterpart", choices=("mirror", "swap"), default="mirror",
                   help="relation probe: compare each caption with its relation mirrored (default) or its two "
                        "noun phrases swapped (the same words, so only phrase-to-place binding shows)")
    p.add_argument("--model", default="embedded",
                   help="base (or inpainting) model: name or directory; 'embedded' (default) picks the shipped "
                        "embedded-base, or embedded-inpaint with --inpaint, and embedded-clip for --clip-guidance")
    p.add_argument("--upsampler", default=None, help="upsampler model (default: none, base-size samples)")
    p.add_argument("--upsample-steps", default=None, help="upsampler steps or respacing (default: the model's)")
    p.add_argument("--clip-model", default=None, help="noise-aware CLIP for --clip-guidance")
    p.add_argument("--clip-guidance", type=float, default=None, help="CLIP guidance scale (replaces --guidance)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's recommendation, else 3)")
    p.add_argument("--sampler", default=None,
                   help=f"one of {', '.join(sampler_names())} (default: the model's recommendation)")
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="apply classifier-free guidance only on this part of the chain (fractions, 1 = pure "
                        "noise; default: the model's recommendation; 0 1 guides every step)")
    p.add_argument("--steps", default=None, help="sampling steps or respacing spec (default: the model's)")
    p.add_argument("--start", type=float, default=None,
                   help="fraction of the chain to run from the model's canvas, or the shapes' background "
                        "for a model without a sampling recommendation (default: the model's, else 1)")
    p.add_argument("--inpaint", action="store_true", help="evaluate inpainting of rendered scenes")
    p.add_argument("--no-restate", action="store_true",
                   help="sample every caption as written, without the base model's prompt rewrites "
                        "(default: rewritten, e.g. \"A to the right of B\" as \"B to the left of A\")")
    p.add_argument("--n-per-prompt", type=int, default=1, help="samples per caption (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the aggregate as JSON")
    p.add_argument("--save-dir", default=None, help="write every sample as PNG plus scores.jsonl here")
    p.add_argument("--progress", action="store_true", help="show sampling progress bars")
    args = p.parse_args(argv)

    try:
        from glide_jax.data import shapes
        from glide_jax.sampling.loading import load_pipeline, resolve
        from glide_jax.sampling.options import BASE_DEFAULT, UPSAMPLE_DEFAULT, stage_with
        from projects.shapes.evaluate import evaluate, format_table, prompts_from

        if args.relation_probe:
            from projects.shapes.relation_probe import relation_sensitivity, text_sensitivity

            model = resolve("embedded-base" if args.model == "embedded" else args.model)
            captions = {"captions": prompts_from(args.prompts)} if args.prompts else {}
            out = relation_sensitivity(model, **captions, seed=args.seed, counterpart=args.probe_counterpart)
            print(json.dumps({"relation_probe": out, "text": text_sensitivity(model, **captions),
                              "model": args.model}, indent=2))
            return 0
        if not args.prompts:
            raise InputError("--prompts is required (a file with one caption a line, heldout:N or single:N)")
        prompts = prompts_from(args.prompts)
        if args.model == "embedded":
            args.model = "embedded-inpaint" if args.inpaint else "embedded-base"
            if args.clip_guidance is not None and not args.clip_model:
                args.clip_model = "embedded-clip"
        if args.clip_guidance is not None and not args.clip_model:
            raise InputError("--clip-guidance needs --clip-model")
        upsampler = None if args.upsampler in (None, "none") else args.upsampler
        pipe = load_pipeline(args.model, upsampler, args.clip_model)
        up = stage_with(pipe.upsampler, UPSAMPLE_DEFAULT, steps=args.upsample_steps) if upsampler else None
        # A model without its own recommendation (a training workdir) starts a truncated chain from the background.
        fallback = dataclasses.replace(BASE_DEFAULT, canvas=shapes.BACKGROUND)
        base = stage_with(pipe.base, fallback, sampler=args.sampler, steps=args.steps, start=args.start)
        result = evaluate(pipe, prompts, n_per_prompt=args.n_per_prompt, seed=args.seed,
                          guidance_scale=args.guidance, base=base,
                          upsample=up, clip_guidance_scale=args.clip_guidance, batch_size=args.batch_size,
                          inpaint=args.inpaint, save_dir=args.save_dir, progress=args.progress,
                          rewrite_prompts=not args.no_restate,
                          guidance_interval=None if args.guidance_interval is None else tuple(args.guidance_interval))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = result["summary"]
    settings = {**result["settings"], "prompts": args.prompts, "model": args.model, "upsampler": args.upsampler,
                "inpaint": args.inpaint, "n_per_prompt": args.n_per_prompt, "seed": args.seed}
    if args.json:
        print(json.dumps({**summary, "settings": settings}, indent=2))
    else:
        print(format_table(summary))
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
