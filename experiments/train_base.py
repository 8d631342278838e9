"""Train GLIDE's text-conditional base diffusion model (64x64 in the paper; 32x32 in the tiny variant).

    python -m experiments.train_base --config experiments/configs/base.py:tiny --workdir runs/base_tiny

An alias of ``python -m experiments.train`` that also checks the config's task is ``base``.
"""

import sys

from experiments.common import main

if __name__ == "__main__":
    sys.exit(main("base", __doc__.splitlines()[0]))
