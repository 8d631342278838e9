"""Train GLIDE's text-conditional upsampler (64 -> 256 in the paper; 16 -> 64 in the tiny variant).

    python -m experiments.train_upsample --config experiments/configs/upsample.py:tiny --workdir runs/up_tiny

An alias of ``python -m experiments.train`` that also checks the config's task is ``upsample``.
"""

import sys

from experiments.common import main

if __name__ == "__main__":
    sys.exit(main("upsample", __doc__.splitlines()[0]))
