"""glide-jax: make images from text with GLIDE (OpenAI's text-guided diffusion model), in JAX.

Models: --model embedded (the default) uses the tiny models shipped in the package: they work
offline, draw 32x32 shapes upsampled to 64x64 and understand captions such as "a red circle above
a blue square". --model openai uses OpenAI's released GLIDE (filtered) weights at 64x64 and 256x256
(run "glide-jax download base upsample tokenizers" first). --model also takes one model folder, a
training run's folder or a .pt file.

Examples:
  glide-jax generate "a red circle above a blue square" --n 4 --out out/
  glide-jax inpaint "a red circle" --image scene.png --mask mask.png
  glide-jax edit "a red circle above a blue square" --image sketch.png --strength 0.6
  glide-jax download base upsample tokenizers && glide-jax generate "a corgi" --model openai
  glide-jax evaluate --captions shapes:heldout:128 --num-samples 128 --inception FILE --out runs/eval

Images are written to --out as <command>_000.png, <command>_001.png, ... and <command>_grid.png;
each line printed gives a file, its seed and its index (--seed S --first-index I re-makes it).
Bad input or a missing, damaged or unwritable file prints "error: ..." and exits with status 2
before any sampling starts; input that is used but probably not as meant prints "warning: ...".
docs/errors.md lists each case.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata
import sys
import warnings
from pathlib import Path

import jax

from glide_jax.demo.server import serve
from glide_jax.diffusion.sampler_registry import sampler_names
from glide_jax.errors import InputError, InputWarning, run_command
from glide_jax.evaluation.captions import read_captions
from glide_jax.evaluation.clip_score import ClipScorer
from glide_jax.evaluation.preprocess import DEFAULT_RESIZE, RESIZE_MODES
from glide_jax.evaluation.runner import DEFAULT_BATCH_SIZE as EVAL_BATCH_SIZE
from glide_jax.evaluation.runner import DEFAULT_SHARD_SIZE, evaluate
from glide_jax.evaluation.scorers import InceptionFeatures
from glide_jax.hub.download import CHECKPOINTS, download, known_names
from glide_jax.hub.released import RELEASED, convert_released
from glide_jax.runtime import enable_compilation_cache
from glide_jax.sampling.images import prepare_output_dir, read_image, save_images
from glide_jax.sampling.loading import pipeline_for
from glide_jax.sampling.options import BASE_DEFAULT, UPSAMPLE_DEFAULT, stage_with
from glide_jax.sampling.pipeline import make_key
from glide_jax.sampling.request import GenerateRequest
from glide_jax.sampling.rewrites import explain_all
from glide_jax.train.sharding import maybe_initialize_distributed


def package_version() -> str:
    """The installed glide-jax's version, else (a checkout run in place) the one setup.cfg declares."""
    try:
        return importlib.metadata.version("glide-jax")
    except importlib.metadata.PackageNotFoundError:
        setup = configparser.ConfigParser()
        setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
        return setup.get("metadata", "version", fallback="unknown")


def _stage_args(ap, prefix: str, fallback, stage: str):
    ap.add_argument(f"--{prefix}sampler", default=None, metavar="NAME",
                    help=f"{stage} sampler: one of {', '.join(sampler_names())} "
                         f"(default: the model's recommendation, else {fallback.sampler})")
    ap.add_argument(f"--{prefix}steps", default=None, metavar="STEPS",
                    help=f"{stage} steps: a number N or a spacing trailingN, logsnrN, karrasN, ddimN, fast27 "
                         f"(default: the model's recommendation, else {fallback.steps})")


def _prompt_args(ap, several: bool) -> None:
    """The prompt: positional in every sampling command, ``--prompt`` also accepted."""
    what = "prompts: each is drawn --n times" if several else "prompt: what to draw (quote it)"
    ap.add_argument("prompt", nargs="*", metavar="PROMPT", help=what)
    ap.add_argument("--prompt", dest="prompt_option", default=None, metavar="PROMPT",
                    help="the prompt, given as an option instead (default: the positional prompt)")


def _common(ap, base_stage: bool = True):
    """Flags shared by the sampling commands; ``base_stage=False`` (upsample) leaves out the base model's."""
    ap.add_argument("--out", default="out", metavar="FOLDER",
                    help="folder for the PNGs, created if missing (default: ./out)")
    ap.add_argument("--n", type=int, default=1, help="images per prompt (default: 1)")
    ap.add_argument("--seed", type=int, default=0,
                    help="random seed, a whole number in [0, 2**32); image I of a run depends only on the seed, "
                         "I, its prompt and the settings (default: 0)")
    ap.add_argument("--model", default="embedded",
                    help="'embedded' (the tiny offline shapes models), 'embedded-fast' (the same with the base "
                         "distilled to a few steps), 'openai' (GLIDE's released weights, after "
                         "'glide-jax download'), or one model: a model folder, a training run's folder or a .pt "
                         "file (default: embedded)")
    ap.add_argument("--upsampler", default=None, metavar="MODEL",
                    help="upsampler model, or 'none' for images at the base model's size "
                         "(default: the upsampler of --model's set)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="number format the networks compute in; bfloat16 is for GPUs and TPUs and slower on a "
                         "CPU (default: float32)")

    if base_stage:
        ap.add_argument("--guidance", type=float, default=None, metavar="SCALE",
                        help="classifier-free guidance scale: higher follows the prompt more closely, 1 turns "
                             "guidance off (default: the model's recommendation, else 3)")
        ap.add_argument("--clip-guidance", type=float, default=None, metavar="SCALE",
                        help="guide with the noise-aware CLIP at this scale instead (default: off)")
        ap.add_argument("--clip-model", default=None, metavar="MODEL",
                        help="CLIP model for --clip-guidance and --candidates (default: the CLIP of --model's set)")
        ap.add_argument("--batch-size", type=int, default=None,
                        help="images sampled at once; lower it if memory runs out (default: all at once)")
        ap.add_argument("--negative-prompt", default=None, metavar="PROMPT",
                        help="what to steer away from: the unconditional caption of guidance (default: none)")
        ap.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="guide only on this part of the chain (fractions, 1 = pure noise); steps outside it "
                             "run the conditional model alone; 0 1 guides every step (default: the model's "
                             "recommendation, else 0 1)")
        ap.add_argument("--dynamic-threshold", type=float, default=None, metavar="QUANTILE",
                        help="rescale each denoised estimate by this quantile of its values (e.g. 0.995) instead "
                             "of clipping it, for high guidance scales (default: off)")
        ap.add_argument("--candidates", type=int, default=1,
                        help="draw this many samples per image and keep the best by the noise-aware CLIP "
                             "(default: 1)")
        ap.add_argument("--first-index", type=int, default=0, metavar="I",
                        help="index of the first image: with an earlier run's seed and settings, re-makes its "
                             "image I (default: 0)")
        _stage_args(ap, "", BASE_DEFAULT, "base")
    _stage_args(ap, "upsample-", UPSAMPLE_DEFAULT, "upsampler")
    ap.add_argument("--upsample-temperature", type=float, default=None, metavar="T",
                    help="scale of the upsampler's starting noise "
                         f"(default: the model's recommendation, else {UPSAMPLE_DEFAULT.temperature})")
    ap.add_argument("--upsample-start", type=float, default=None, metavar="FRACTION",
                    help="part of the upsampler's chain to run, starting from the enlarged image when below 1 "
                         "(default: the model's recommendation, else 1 = from pure noise)")
    ap.add_argument("--no-progress", action="store_true", help="do not show progress bars (default: shown)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glide-jax", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"glide-jax {package_version()}",
                    help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="draw images of one or more prompts",
                       description="Draw --n images of each prompt. With the default embedded models: "
                                   "glide-jax generate \"a red circle above a blue square\" --n 4 --out out/")
    _prompt_args(g, several=True)
    g.add_argument("--start", type=float, default=None, metavar="FRACTION",
                   help="part of the chain to run, starting from the model's plain canvas when below 1 "
                        "(default: the model's recommendation, else 1 = from pure noise)")
    _common(g)
    i = sub.add_parser("inpaint", help="redraw the masked part of an image, following a prompt",
                       description="Redraw the black part of --mask over --image so that the picture shows the "
                                   "prompt; the white part is kept. Example: glide-jax inpaint \"a red circle\" "
                                   "--image scene.png --mask mask.png")
    _prompt_args(i, several=False)
    i.add_argument("--image", required=True, help="the picture to change, an image file such as a PNG (required)")
    i.add_argument("--mask", required=True,
                   help="picture of the image's size: white = keep, black = draw anew (required)")
    _common(i)
    e = sub.add_parser("edit", help="turn a sketch or photo into an image of a prompt",
                       description="Turn a sketch or photo into an image of the prompt (SDEdit): the picture is "
                                   "noised part of the way and denoised following the prompt. Example: "
                                   "glide-jax edit \"a red circle\" --image sketch.png --strength 0.6")
    _prompt_args(e, several=False)
    e.add_argument("--image", required=True, help="the sketch or photo, an image file such as a PNG (required)")
    e.add_argument("--strength", type=float, default=0.7,
                   help="part of the chain re-run, in (0, 1]: near 1 ignores the picture, low values keep "
                        "it (default: 0.7)")
    _common(e)
    u = sub.add_parser("upsample", help="enlarge an image, following a prompt",
                       description="Enlarge an image with the upsampler (64 -> 256 with --model openai, 32 -> 64 "
                                   "with the embedded models), following the prompt that describes it. Example: "
                                   "glide-jax upsample \"a red circle\" --image small.png")
    _prompt_args(u, several=False)
    u.add_argument("--image", required=True,
                   help="the picture to enlarge; it is scaled to the upsampler's input size first (required)")
    _common(u, base_stage=False)
    c = sub.add_parser("convert", help="turn a downloaded checkpoint into a model folder in the cache",
                       description="Convert downloaded OpenAI checkpoints into model folders in the cache "
                                   "(sampling does it on first use; this does it now).")
    c.add_argument("names", nargs="+", choices=RELEASED, metavar="NAME",
                   help=f"checkpoints to convert: {', '.join(RELEASED)}")
    d = sub.add_parser("download", help="fetch OpenAI's released checkpoints, tokenizers and evaluation networks",
                       description="Download OpenAI's released GLIDE (filtered) checkpoints, the tokenizer "
                                   "vocabularies, or the networks FID and CLIP score are measured with, into the "
                                   "cache (~/.cache/glide_jax, or $GLIDE_JAX_CACHE); a file is kept only once it is "
                                   "verified. Example: glide-jax download base upsample tokenizers")
    d.add_argument("names", nargs="+", metavar="NAME",
                   help="base, upsample, base-inpaint, upsample-inpaint, clip/image-enc, clip/text-enc, clip (both "
                        "CLIP files), tokenizers, or all (the GLIDE files); inception, clip-vit-b32, clip-vit-b16, "
                        "clip-vit-l14 (FID and CLIP score)")
    d.add_argument("--cache-dir", default=None, metavar="FOLDER",
                   help="where to store the files (default: $GLIDE_JAX_CACHE, else ~/.cache/glide_jax)")
    _serve_parser(sub)
    _evaluate_parser(sub)
    return ap


def _pipeline(args, inpaint: bool):
    need_clip = bool(getattr(args, "clip_guidance", None)) or getattr(args, "candidates", 1) > 1
    return pipeline_for(args.model, inpaint=inpaint, upsampler=args.upsampler, clip=getattr(args, "clip_model", None),
                        need_clip=need_clip, dtype=None if args.dtype == "float32" else args.dtype)


def rewrite_notes(pipe, prompts) -> list:
    """A note for each prompt ``Pipeline.generate`` will sample in other words, with the rule's reason."""
    return [f"note: drawing {prompt!r} as {said!r}" + "".join(f" ({note})" for note in notes)
            for prompt, said, notes in explain_all(pipe.prompt_rewriter, prompts)]


def _check_numbers(args) -> None:
    """Flags whose values argparse's types cannot judge; checked before any model is loaded."""
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size} (leave it out to sample all at once)")

    try:
        make_key(args.seed)
    except ValueError as e:
        raise InputError(str(e).replace("seed must", "--seed must", 1)) from None


def split_prompt_note(prompts) -> str:
    """A warning for ``generate a red circle`` (unquoted words become one prompt each), else ''."""
    if len(prompts) > 1 and all(len(p.split()) == 1 for p in prompts):
        joined = " ".join(prompts)
        return (f"{len(prompts)} prompts of one word each ({', '.join(map(repr, prompts[:4]))}"
                f"{', ...' if len(prompts) > 4 else ''}) are sampled separately; to draw one prompt, quote it: "
                f"glide-jax generate \"{joined}\"")
    return ""


def command_prompts(args) -> list:
    """The prompts of a sampling command, positional or ``--prompt``; one for inpaint, edit and upsample."""
    prompts = list(args.prompt) + ([args.prompt_option] if args.prompt_option is not None else [])
    usage = f'glide-jax {args.command} "PROMPT"' + ("" if args.command == "generate" else " --image IMAGE")
    if not prompts:
        raise InputError(f"{args.command} needs a prompt: {usage} ...")
    if args.command != "generate" and len(prompts) > 1:
        raise InputError(f"{args.command} takes one prompt, got {len(prompts)} ({', '.join(map(repr, prompts[:4]))}"
                         f"{', ...' if len(prompts) > 4 else ''}); quote a prompt of several words: "
                         f"glide-jax {args.command} \"{' '.join(prompts)}\" ...")
    return prompts


def _run_sampling(args) -> int:
    inpaint = args.command == "inpaint"
    prompts = command_prompts(args)
    _check_numbers(args)
    out_dir = prepare_output_dir(args.out)
    if split_prompt_note(prompts):
        warnings.warn(split_prompt_note(prompts), InputWarning)
    pipe = _pipeline(args, inpaint)
    if args.command != "upsample":
        for note in rewrite_notes(pipe, prompts):
            print(note, file=sys.stderr)
    prompts = [p for p in prompts for _ in range(args.n)]
    up = None if pipe.upsampler is None else stage_with(
        pipe.upsampler, UPSAMPLE_DEFAULT, sampler=args.upsample_sampler, steps=args.upsample_steps,
        temperature=args.upsample_temperature, start=args.upsample_start)
    if args.command == "upsample":
        if pipe.upsampler is None:
            raise InputError("upsample needs an upsampler model (--upsampler)")
        images = pipe.upsample_images(prompts, read_image(args.image), seed=args.seed, options=up,
                                      progress=not args.no_progress)
    else:
        base = stage_with(pipe.base, BASE_DEFAULT, sampler=args.sampler, steps=args.steps,
                          start=getattr(args, "start", None))
        conditioning = {}
        if args.command == "inpaint":
            conditioning = dict(inpaint_image=args.image, inpaint_mask=args.mask)
        elif args.command == "edit":
            conditioning = dict(init_image=args.image, strength=args.strength)
        request = GenerateRequest(
            prompts, seed=args.seed, guidance_scale=args.guidance, base=base, upsample=up,
            batch_size=args.batch_size, clip_guidance_scale=args.clip_guidance, negative_prompt=args.negative_prompt,
            guidance_interval=args.guidance_interval, dynamic_threshold=args.dynamic_threshold,
            candidates=args.candidates, first_index=args.first_index, **conditioning)
        images = pipe.generate(request, progress=not args.no_progress)
    paths = save_images(images, out_dir, prefix=args.command)
    first = getattr(args, "first_index", 0)
    for i, path in enumerate(paths[: len(images)]):
        print(f"{path}\tseed {args.seed} index {first + i}")
    for path in paths[len(images):]:
        print(path)
    return 0


def _download(args) -> int:
    names = []
    for n in args.names:
        names += list(CHECKPOINTS) + ["tokenizers"] if n == "all" else (
            ["clip/image-enc", "clip/text-enc"] if n == "clip" else [n])
    unknown = [n for n in names if n not in known_names()]
    if unknown:
        raise InputError(f"unknown download {unknown[0]!r}; known: {', '.join(known_names())}, clip, all")
    for n in names:
        print(download(n, cache_dir=args.cache_dir))
    return 0


def _convert(args) -> int:
    for n in args.names:
        print(convert_released(n))
    return 0


# ----------------------------------------------------------------------------- serve (the web demo)
def _serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="open a web page for generating, inpainting and editing",
                       description="Serve a web page with Generate, Inpaint and Edit tabs (needs the demo extra: "
                                   "pip install -e \".[demo]\"). The page is reachable at once and says when "
                                   "the models are ready; requests sent before then wait.")
    s.add_argument("--model", default="embedded",
                   help="'embedded', 'embedded-fast', 'openai', or one text-to-image model (then the page has no "
                        "Inpaint tab) "
                        "(default: embedded)")
    s.add_argument("--upsampler", default=None, metavar="MODEL",
                   help="upsampler model, or 'none' for images at the base model's size "
                        "(default: the upsampler of --model's set)")
    s.add_argument("--clip-model", default=None, metavar="MODEL",
                   help="CLIP model; adds a 'candidates' control that keeps the CLIP-best of several samples "
                        "(default: none)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the page, with no login, to every machine that can "
                        "reach this one (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    s.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link for 72 hours (default: off)")


def _serve(args) -> int:
    serve(args.model, args.upsampler, args.clip_model, host=args.host, port=args.port, share=args.share)
    return 0


# ----------------------------------------------------------------------------- evaluate (FID, CLIP score)
def _evaluate_parser(sub) -> None:
    v = sub.add_parser("evaluate", help="FID and CLIP score of many samples (resumable; several processes share it)")
    v.add_argument("--captions", required=True,
                   help="captions to sample: a .txt or .jsonl file, image-caption shards (a folder with "
                        "captions.jsonl, .tar files), or shapes:heldout[:N] / shapes:single[:N]; samples cycle "
                        "through them")
    v.add_argument("--num-samples", type=int, required=True, help="images to draw (FID wants >= 2048)")
    v.add_argument("--inception", default=None,
                   help="pytorch-fid's Inception weights (.pth) for FID; without them no FID")
    v.add_argument("--reference", default=None,
                   help="FID reference: pytorch-fid statistics (.npz), or reference images (a folder or shards) "
                        "whose statistics are computed once and cached")
    v.add_argument("--clip-model", default=None,
                   help="Hugging Face CLIP folder for the CLIP score (not the noise-aware CLIP of guidance)")
    v.add_argument("--resize", choices=RESIZE_MODES, default=DEFAULT_RESIZE,
                   help="resize to the Inception's 299x299: pytorch-fid's bilinear (default) or clean-fid's bicubic")
    v.add_argument("--out", default="eval", help="output folder: shards, statistics.npz, results.json; rerunning "
                                                  "the same command continues it (default ./eval)")
    v.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="images sampled and scored at once")
    v.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help="samples per saved shard, the unit of resuming and of splitting over processes")
    v.add_argument("--max-shards", type=int, default=None,
                   help="stop after this many new shards (per process); rerun to continue")
    v.add_argument("--model", default="embedded", help="'embedded' (default), 'embedded-fast', 'openai', or one base model source")
    v.add_argument("--upsampler", default=None, help="upsampler model ('none' for base-size samples)")
    v.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype of the networks")
    v.add_argument("--seed", type=int, default=0, help="sample i is drawn from the seed's key folded with i")
    v.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's recommendation, else 3)")
    v.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="guide only on this part of the chain (default: the model's recommendation)")
    _stage_args(v, "", BASE_DEFAULT, "base")
    _stage_args(v, "upsample-", UPSAMPLE_DEFAULT, "upsampler")
    v.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")


def run_evaluate(args, extra_scorers=None) -> int:
    """``glide-jax evaluate``; ``extra_scorers`` (``{name: (image, caption) -> dict}``) are for projects'
    own graders (``python -m projects.shapes.evaluate_fid``)."""
    maybe_initialize_distributed()  # before anything touches a device
    if args.reference and not args.inception:
        raise InputError("--reference is the FID reference: it needs --inception")
    if not (args.inception or args.clip_model or extra_scorers):
        raise InputError("nothing to measure: give --inception (FID) and/or --clip-model (CLIP score)")
    out_dir = prepare_output_dir(args.out)
    captions = read_captions(args.captions, args.num_samples)
    features = None if not args.inception else InceptionFeatures.from_file(
        args.inception, resize=args.resize, batch_size=args.batch_size)
    clip = ClipScorer.from_directory(args.clip_model) if args.clip_model else None
    pipe = pipeline_for(args.model, upsampler=args.upsampler, dtype=None if args.dtype == "float32" else args.dtype)
    base = stage_with(pipe.base, BASE_DEFAULT, sampler=args.sampler, steps=args.steps)
    up = None if pipe.upsampler is None else stage_with(
        pipe.upsampler, UPSAMPLE_DEFAULT, sampler=args.upsample_sampler, steps=args.upsample_steps)
    request = dict(seed=args.seed, guidance_scale=args.guidance, base=base, upsample=up,
                   guidance_interval=args.guidance_interval)
    record = {"captions": args.captions, "model": args.model, "upsampler": args.upsampler,
              "inception": args.inception, "clip_model": args.clip_model, "reference": args.reference}
    results = evaluate(pipe, captions, out_dir=out_dir, num_samples=args.num_samples, request=request,
                       features=features, clip=clip, reference=args.reference, extra_scorers=extra_scorers,
                       batch_size=args.batch_size, shard_size=args.shard_size, max_shards=args.max_shards,
                       progress=not args.no_progress, record=record)
    if jax.process_index() != 0:
        return 0
    if not results["complete"]:
        print(f"{results['finished_shards']} of {results['shards']} shards done in {out_dir}; rerun to continue")
        return 0
    for line in summary_lines(results):
        print(line)
    return 0


def summary_lines(results) -> list:
    """The figures of a finished evaluation, one line each."""
    lines = []
    if results.get("fid") is not None:
        lines.append(f"FID {results['fid']:.4f} ({results['num_samples']} samples vs {results['reference']['path']})"
                     if "path" in results["reference"] else f"FID {results['fid']:.4f}")
    if results.get("clip_score") is not None:
        lines.append(f"CLIP score {results['clip_score']:.4f}")
    for scorer, values in results.get("scores", {}).items():
        lines.append(f"{scorer}: " + ", ".join(f"{key} {value:.4f}" for key, value in values.items()))
    lines.append(f"{results['timing']['images_per_s']:.3g} images/s; results in "
                 f"{Path(results['out_dir']) / 'results.json'}")
    return lines


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    commands = {"download": _download, "convert": _convert, "serve": _serve, "evaluate": run_evaluate}
    return run_command(lambda: commands.get(args.command, _run_sampling)(args))


if __name__ == "__main__":
    sys.exit(main())
