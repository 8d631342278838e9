"""The ``glide-jax`` command (also ``python -m glide_jax``): generate, inpaint, edit, upsample, convert, download,
serve.

Models are named with ``--model``: ``embedded`` (the default: the tiny
captioned-shapes models shipped in the package, offline, 32x32 upsampled to
64x64), ``openai`` (the released GLIDE (filtered) checkpoints, downloaded with
``glide-jax download`` and converted into the cache on first use), or one
model source: a model directory, a training workdir, a released U-Net's
``.pt`` file, an embedded or a released name (``glide_jax.hub.registry``).
A prompt the base model's rules rewrite is noted on stderr. Every command runs
inside :func:`glide_jax.errors.run_command`: bad input or a missing, damaged or
unwritable file prints ``error: ...`` and exits with status 2 (a bug keeps its
traceback and exits 1), and input that is accepted but probably not meant
prints ``warning: ...``. The output folder is created and test-written before
any sampling starts. docs/errors.md lists what each kind of bad input gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import warnings

from glide_jax.hub.released import RELEASED


def _stage_args(ap, prefix: str, fallback):
    ap.add_argument(f"--{prefix}sampler", default=None,
                    help="ddpm, ddim, dpm++2m, unipc, unipc3 or euler_a "
                         f"(default: the model's recommendation, else {fallback.sampler})")
    ap.add_argument(f"--{prefix}steps", default=None,
                    help="steps or a respacing spec: N, trailingN, logsnrN, karrasN, ddimN, fast27 "
                         f"(default: the model's, else {fallback.steps})")


def _common(ap, base_stage: bool = True):
    """Flags shared by the sampling commands; ``base_stage=False`` (upsample) leaves out the base model's."""
    ap.add_argument("--out", default="out", help="output folder (default ./out)")
    ap.add_argument("--n", type=int, default=1, help="images per prompt")
    ap.add_argument("--seed", type=int, default=0, help="integer in [0, 2**32)")
    ap.add_argument("--model", default="embedded",
                    help="'embedded' (default, offline shapes models), 'openai', or one model: a model "
                         "directory, a training workdir, a .pt file, an embedded or a released name")
    ap.add_argument("--upsampler", default=None, help="upsampler model ('none' for base-size output)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="compute dtype of the networks (parameters stay float32); bfloat16 is for accelerators "
                         "and slower on a CPU")
    from glide_jax.sampling.options import BASE_DEFAULT, UPSAMPLE_DEFAULT

    if base_stage:
        ap.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the model's recommendation, else 3)")
        ap.add_argument("--clip-guidance", type=float, default=None, help="use CLIP guidance with this scale instead")
        ap.add_argument("--clip-model", default=None, help="CLIP model for --clip-guidance")
        ap.add_argument("--batch-size", type=int, default=None, help="images sampled at once (default: all)")
        ap.add_argument("--negative-prompt", default=None,
                        help="caption to steer away from: the unconditional input of classifier-free guidance")
        ap.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="apply guidance only on this part of the chain (fractions, 1 = pure noise); "
                             "steps outside it run the conditional model alone (default: the model's "
                             "recommendation; 0 1 guides every step)")
        ap.add_argument("--dynamic-threshold", type=float, default=None, metavar="QUANTILE",
                        help="rescale each x0 estimate by this quantile of its values (e.g. 0.995) instead of "
                             "clamping, for high guidance scales")
        ap.add_argument("--candidates", type=int, default=1,
                        help="draw this many samples per image and keep the best by the noise-aware CLIP")
        ap.add_argument("--first-index", type=int, default=0,
                        help="index of the first image: re-makes image I of an earlier run with --first-index I")
        _stage_args(ap, "", BASE_DEFAULT)
    _stage_args(ap, "upsample-", UPSAMPLE_DEFAULT)
    ap.add_argument("--upsample-temperature", type=float, default=None,
                    help="initial noise scale of the upsampler "
                         f"(default: the model's, else {UPSAMPLE_DEFAULT.temperature})")
    ap.add_argument("--upsample-start", type=float, default=None,
                    help="fraction of the upsampler's chain to run, from its enlarged input below 1 "
                         "(default: the model's recommendation, else 1 = from pure noise)")
    ap.add_argument("--no-progress", action="store_true")


def _steps(value: str):
    return int(value) if re.fullmatch(r"\s*[+-]?\d+\s*", value) else value


def stage_options(model, fallback, sampler, steps, temperature=None, start=None):
    """The CLI's stage options: the model's recommendation (or the package default) with any flag applied."""
    from glide_jax.sampling.options import DEFAULT

    if sampler is None and steps is None and temperature is None and start is None:
        return DEFAULT
    base = model.sampling if model is not None and model.sampling is not None else fallback
    return dataclasses.replace(base, sampler=sampler or base.sampler, steps=_steps(steps) if steps else base.steps,
                               temperature=base.temperature if temperature is None else temperature,
                               start=base.start if start is None else start)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glide-jax", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text → image")
    g.add_argument("prompt", nargs="+")
    g.add_argument("--start", type=float, default=None,
                   help="fraction of the chain to run, from the model's plain canvas below 1 "
                        "(default: the model's recommendation, else 1 = from pure noise)")
    _common(g)
    i = sub.add_parser("inpaint", help="fill the masked region of an image from a prompt")
    i.add_argument("--image", required=True)
    i.add_argument("--mask", required=True, help="PNG of the image's size: white = keep, black = fill in")
    i.add_argument("--prompt", required=True)
    _common(i)
    e = sub.add_parser("edit", help="turn a sketch or photo into an image of the prompt (SDEdit)")
    e.add_argument("--image", required=True)
    e.add_argument("--strength", type=float, default=0.7, help="fraction of the chain re-run (0, 1]")
    e.add_argument("--prompt", required=True)
    _common(e)
    u = sub.add_parser("upsample",
                       help="super-resolution of an existing image (64 → 256 with openai, 32 → 64 embedded)")
    u.add_argument("--image", required=True)
    u.add_argument("--prompt", required=True)
    _common(u, base_stage=False)
    c = sub.add_parser("convert", help="convert a downloaded OpenAI checkpoint into the cache")
    c.add_argument("names", nargs="+", choices=RELEASED)
    d = sub.add_parser("download", help="download OpenAI checkpoints or the tokenizer vocabularies")
    d.add_argument("names", nargs="+", help="base, upsample, base-inpaint, upsample-inpaint, clip/image-enc, "
                                            "clip/text-enc, clip, tokenizers, or all")
    d.add_argument("--cache-dir", default=None)
    _serve_parser(sub)
    return ap


def _pipeline(args, inpaint: bool):
    from glide_jax.hub.registry import MODEL_SETS, load_pipeline

    clip_model, clip_guidance = getattr(args, "clip_model", None), getattr(args, "clip_guidance", None)
    needs_clip = bool(clip_guidance) or getattr(args, "candidates", 1) > 1
    if args.model in MODEL_SETS:
        models = MODEL_SETS[args.model]
        base = models.inpaint if inpaint else models.base
        up = args.upsampler or (models.upsample_inpaint if inpaint else models.upsample)
        clip = clip_model or (models.clip if needs_clip else None)
    else:
        base, up, clip = args.model, args.upsampler, clip_model
        if needs_clip and not clip:
            raise ValueError("--clip-guidance and --candidates with a custom --model need --clip-model")
    if up in (None, "none"):
        up = None
    return load_pipeline(base, up, clip, dtype=None if args.dtype == "float32" else args.dtype)


def rewrite_notes(pipe, prompts) -> list:
    """A note for each prompt ``Pipeline.generate`` will sample in other words, with the rule's reason."""
    from glide_jax.sampling.rewrites import explain_all

    return [f"note: drawing {prompt!r} as {said!r}" + "".join(f" ({note})" for note in notes)
            for prompt, said, notes in explain_all(pipe.prompt_rewriter, prompts)]


def _check_numbers(args) -> None:
    """Flags whose values argparse's types cannot judge; checked before any model is loaded."""
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size} (leave it out to sample all at once)")
    from glide_jax.sampling.pipeline import make_key

    try:
        make_key(args.seed)
    except ValueError as e:
        raise ValueError(str(e).replace("seed must", "--seed must", 1)) from None


def split_prompt_note(prompts) -> str:
    """A warning for ``generate a red circle`` (unquoted words become one prompt each), else ''."""
    if len(prompts) > 1 and all(len(p.split()) == 1 for p in prompts):
        joined = " ".join(prompts)
        return (f"{len(prompts)} prompts of one word each ({', '.join(map(repr, prompts[:4]))}"
                f"{', ...' if len(prompts) > 4 else ''}) are sampled separately; to draw one prompt, quote it: "
                f"glide-jax generate \"{joined}\"")
    return ""


def _run_sampling(args) -> int:
    from glide_jax.errors import InputWarning
    from glide_jax.sampling.images import prepare_output_dir, read_image, save_images
    from glide_jax.sampling.options import BASE_DEFAULT, UPSAMPLE_DEFAULT

    inpaint = args.command == "inpaint"
    prompts = list(args.prompt) if isinstance(args.prompt, list) else [args.prompt]
    _check_numbers(args)
    out_dir = prepare_output_dir(args.out)
    if split_prompt_note(prompts):
        warnings.warn(split_prompt_note(prompts), InputWarning)
    pipe = _pipeline(args, inpaint)
    if args.command != "upsample":
        for note in rewrite_notes(pipe, prompts):
            print(note, file=sys.stderr)
    prompts = [p for p in prompts for _ in range(args.n)]
    up = None if pipe.upsampler is None else stage_options(pipe.upsampler, UPSAMPLE_DEFAULT, args.upsample_sampler,
                                                            args.upsample_steps, args.upsample_temperature,
                                                            args.upsample_start)
    if args.command == "upsample":
        if pipe.upsampler is None:
            raise ValueError("upsample needs an upsampler model (--upsampler)")
        images = pipe.upsample_images(prompts, read_image(args.image), seed=args.seed, options=up,
                                      progress=not args.no_progress)
    else:
        base = stage_options(pipe.base, BASE_DEFAULT, args.sampler, args.steps, start=getattr(args, "start", None))
        kwargs = dict(seed=args.seed, guidance_scale=args.guidance, base=base, upsample=up,
                      batch_size=args.batch_size, clip_guidance_scale=args.clip_guidance,
                      negative_prompt=args.negative_prompt, guidance_interval=args.guidance_interval,
                      dynamic_threshold=args.dynamic_threshold, candidates=args.candidates,
                      first_index=args.first_index, progress=not args.no_progress)
        if args.command == "inpaint":
            kwargs.update(inpaint_image=args.image, inpaint_mask=args.mask)
        elif args.command == "edit":
            kwargs.update(init_image=args.image, strength=args.strength)
        images = pipe.generate(prompts, **kwargs)
    paths = save_images(images, out_dir, prefix=args.command)
    first = getattr(args, "first_index", 0)
    for i, path in enumerate(paths[: len(images)]):
        print(f"{path}\tseed {args.seed} index {first + i}")
    for path in paths[len(images):]:
        print(path)
    return 0


def _download(args) -> int:
    from glide_jax.hub.download import CHECKPOINTS, download, known_names

    names = []
    for n in args.names:
        names += list(CHECKPOINTS) + ["tokenizers"] if n == "all" else (
            ["clip/image-enc", "clip/text-enc"] if n == "clip" else [n])
    unknown = [n for n in names if n not in known_names()]
    if unknown:
        raise ValueError(f"unknown download {unknown[0]!r}; known: {', '.join(known_names())}, clip, all")
    for n in names:
        print(download(n, cache_dir=args.cache_dir))
    return 0


def _convert(args) -> int:
    from glide_jax.hub.released import convert_released

    for n in args.names:
        print(convert_released(n))
    return 0


# ----------------------------------------------------------------------------- serve (the web demo)
def _serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="a web page for generating, inpainting and editing (needs the demo extra)")
    s.add_argument("--model", default="embedded",
                   help="'embedded' (default), 'openai', or one text-to-image model (then no Inpaint tab)")
    s.add_argument("--upsampler", default=None, help="upsampler model ('none' for base-size output)")
    s.add_argument("--clip-model", default=None, help="CLIP model; adds a 'candidates' control (CLIP re-ranking)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")


def _serve(args) -> int:
    from glide_jax.demo.server import serve

    serve(args.model, args.upsampler, args.clip_model, host=args.host, port=args.port, share=args.share)
    return 0


def main(argv=None) -> int:
    from glide_jax.errors import run_command
    from glide_jax.runtime import enable_compilation_cache

    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    commands = {"download": _download, "convert": _convert, "serve": _serve}
    return run_command(lambda: commands.get(args.command, _run_sampling)(args))


if __name__ == "__main__":
    sys.exit(main())
