"""FID reference statistics and distances between statistics files.

    python -m tools.evaluate stats --images DIR_OR_SHARDS --inception pt_inception.pth --out ref.npz
    python -m tools.evaluate fid ref.npz eval/statistics.npz

``stats`` streams the images of a folder (image files, or a ``captions.jsonl`` folder) or of
WebDataset shards through the Inception, split over the local devices, and writes pytorch-fid's
``.npz`` (``mu``, ``sigma``); ``glide-jax evaluate --reference`` takes the file (or the images
themselves, whose statistics it caches). ``fid`` prints the Fréchet distance between two such
files. Bad input prints ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from glide_jax.errors import run_command
from glide_jax.evaluation.features import DEFAULT_BATCH_SIZE
from glide_jax.evaluation.frechet import frechet_distance, load_statistics
from glide_jax.evaluation.preprocess import DEFAULT_RESIZE, RESIZE_MODES
from glide_jax.evaluation.reference import image_statistics, write_statistics
from glide_jax.evaluation.scorers import InceptionFeatures


def _stats(args) -> int:
    features = InceptionFeatures.from_file(args.inception, resize=args.resize, batch_size=args.batch_size)
    stats = image_statistics(args.images, features, args.batch_size)
    mu, sigma = stats.mean_cov()
    print(f"{write_statistics(args.out, mu, sigma)}: statistics of {stats.count} images ({args.resize} resize)")
    return 0


def _fid(args) -> int:
    print(f"{frechet_distance(*load_statistics(args.first), *load_statistics(args.second)):.6f}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stats", help="FID statistics (.npz) of reference images")
    s.add_argument("--images", required=True, help="an image folder, a captions.jsonl folder, .tar shards or a glob")
    s.add_argument("--inception", required=True, help="pytorch-fid's Inception weights (.pth)")
    s.add_argument("--out", required=True, help="the .npz to write")
    s.add_argument("--resize", choices=RESIZE_MODES, default=DEFAULT_RESIZE)
    s.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    f = sub.add_parser("fid", help="the Fréchet distance between two statistics files")
    f.add_argument("first")
    f.add_argument("second")
    args = ap.parse_args(argv)
    return run_command(lambda: {"stats": _stats, "fid": _fid}[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
