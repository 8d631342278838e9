"""Build a training dataset as TFDS array_record files (no TensorFlow needed).

    python -m tools.prepare_dataset shapes --size 64 --num 20000 --data-dir DIR
    python -m tools.prepare_dataset images --src SHARD [SHARD ...] --size 64 [256] --data-dir DIR \\
        [--min-side N] [--max-aspect 2.0] [--beam-runner DirectRunner] [--beam-options="--flag=value ..."]

``images`` (alias ``folder``) reads folders with a ``captions.jsonl`` and WebDataset tar
shards (``NNNNN.tar``, or a folder of them, or a glob); see docs/data.md. Each ``--size``
is its own dataset. With ``--beam-runner`` or ``--beam-options`` the build runs as an
Apache Beam pipeline (``pip install 'glide-jax[beam]'``). Thin wrapper over
:mod:`glide_jax.data.tfds_builders`; prints the folder of each prepared dataset version,
which :func:`glide_jax.data.input_pipeline.open_source` reads, and its written/skipped counts.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from typing import Optional, Sequence

from glide_jax.data import image_examples, tfds_builders


def _beam_settings(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """(runner, PipelineOptions) from the flags, or (None, None) for the plain build."""
    if args.beam_runner is None and args.beam_options is None:
        return None, None
    if importlib.util.find_spec("apache_beam") is None:
        parser.error("--beam-runner/--beam-options need Apache Beam: pip install 'glide-jax[beam]' (or apache-beam)")
    from apache_beam.options.pipeline_options import PipelineOptions

    # Always explicit flags: PipelineOptions() without them would parse this command's own arguments.
    return args.beam_runner, PipelineOptions(shlex.split(args.beam_options or ""))


def _build_images(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    runner, options = _beam_settings(parser, args)
    if len(set(args.size)) != len(args.size):
        parser.error(f"--size lists a size twice: {args.size}")
    for size in args.size:
        name = args.name if args.name is None or len(args.size) == 1 else f"{args.name}_{size}"
        try:
            builder = tfds_builders.prepare_folders(args.data_dir, args.src, size, name, args.min_side, args.max_aspect,
                                                    beam_runner=runner, beam_options=options)
        except ValueError as e:  # bad sources or filter settings
            parser.error(str(e))
        splits = {split: info.num_examples for split, info in builder.info.splits.items()}
        print(f"{builder.data_dir} {splits}")
        print(f"  {image_examples.format_counts(tfds_builders.build_counts(builder))}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.prepare_dataset", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("shapes", help="procedural captioned shapes (train + heldout splits)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels")
    s.add_argument("--num", type=int, default=20000, help="training examples")
    s.add_argument("--num-heldout", type=int, default=None, help="held-out examples (default num/20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", required=True)
    f = sub.add_parser("images", aliases=["folder"],
                       help="image-caption shards: folders with a captions.jsonl, WebDataset .tar shards")
    f.add_argument("--src", nargs="+", required=True,
                   help="shards: folders with captions.jsonl, .tar files, folders of .tar files, or glob patterns")
    f.add_argument("--size", type=int, nargs="+", default=[64],
                   help="image side(s) in pixels (centre crop + resize); each size is its own dataset")
    f.add_argument("--name", default=None,
                   help="config name (default: derived from the sources, size and filter; several sizes add _SIZE)")
    f.add_argument("--min-side", type=int, default=None,
                   help="skip images whose shorter side is below this (default: the dataset's --size, no upscaling)")
    f.add_argument("--max-aspect", type=float, default=image_examples.DEFAULT_MAX_ASPECT,
                   help="skip images whose longer/shorter side ratio exceeds this (default %(default)s)")
    f.add_argument("--beam-runner", default=None,
                   help="build with Apache Beam on this runner (DirectRunner, DataflowRunner, FlinkRunner, ...)")
    f.add_argument("--beam-options", default=None,
                   help='Beam pipeline options as one string, given with "=": '
                        '--beam-options="--runner=FlinkRunner --flink_master=HOST:8081"')
    f.add_argument("--data-dir", required=True)
    args = p.parse_args(argv)

    if args.kind == "shapes":
        builder = tfds_builders.prepare_shapes(args.data_dir, args.size, args.num, args.num_heldout, args.seed)
        splits = {name: info.num_examples for name, info in builder.info.splits.items()}
        print(f"{builder.data_dir} {splits}")
    else:
        _build_images(p, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
