"""FID, CLIP score and the shapes grader's accuracy of one model in one run.

    python -m projects.shapes.evaluate_fid --num-samples 2048 --inception pt_inception.pth \\
        --reference shapes_ref.npz --clip-model CLIP_DIR --out eval/embedded

The flags are ``glide-jax evaluate``'s (``--model``, ``--sampler``, ``--steps``, ``--guidance``,
``--seed``, ``--batch-size``, ...); ``--captions`` defaults to the held-out captions
(``shapes:heldout``). Every sample is also graded by :func:`projects.shapes.grading.score`, whose
answers are averaged into ``results.json`` under ``scores.shapes`` (``correct`` is the accuracy
``eval_shapes`` reports, the other keys its per-attribute rates). Shards, resuming and several
processes work as for ``glide-jax evaluate``.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from glide_jax import cli
from glide_jax.errors import run_command
from projects.shapes import grading

DEFAULT_CAPTIONS = "shapes:heldout"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = cli.build_parser()
    if any(a in ("-h", "--help") for a in argv):
        parser.parse_args(["evaluate", "--help"])
    args = parser.parse_args(["evaluate", "--captions", DEFAULT_CAPTIONS, *argv])
    return run_command(lambda: cli.run_evaluate(args, extra_scorers={"shapes": grading.score}))


if __name__ == "__main__":
    sys.exit(main())
