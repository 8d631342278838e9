"""Train GLIDE's noise-aware CLIP (contrastive loss between noised images x_t and their captions).

    python -m experiments.train_clip --config experiments/configs/clip.py:tiny --workdir runs/clip_tiny

An alias of ``python -m experiments.train`` that also checks the config's task is ``clip``.
"""

import sys

from experiments.common import main

if __name__ == "__main__":
    sys.exit(main("clip", __doc__.splitlines()[0]))
