"""Build a training dataset as TFDS array_record files (no TensorFlow needed).

    python -m tools.prepare_dataset shapes --size 64 --num 20000 --data-dir DIR
    python -m tools.prepare_dataset folder --src DIR [DIR ...] --size 64 --data-dir DIR

Thin wrapper over :mod:`glide_jax.data.tfds_builders`; prints the folder of the
prepared dataset version, which :func:`glide_jax.data.input_pipeline.open_source` reads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from glide_jax.data import tfds_builders


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.prepare_dataset", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("shapes", help="procedural captioned shapes (train + heldout splits)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels")
    s.add_argument("--num", type=int, default=20000, help="training examples")
    s.add_argument("--num-heldout", type=int, default=None, help="held-out examples (default num/20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", required=True)
    f = sub.add_parser("folder", help="folders of images with a captions.jsonl each")
    f.add_argument("--src", nargs="+", required=True, help="one or more folders (shards)")
    f.add_argument("--size", type=int, default=64, help="image side in pixels (centre crop + resize)")
    f.add_argument("--name", default=None, help="config name (default: derived from the sources and size)")
    f.add_argument("--data-dir", required=True)
    args = p.parse_args(argv)

    if args.kind == "shapes":
        builder = tfds_builders.prepare_shapes(args.data_dir, args.size, args.num, args.num_heldout, args.seed)
    else:
        builder = tfds_builders.prepare_folders(args.data_dir, args.src, args.size, args.name)
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    print(f"{builder.data_dir} {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
