"""Train the model a config describes: the task (base, upsample, inpaint, clip) comes from the config.

    python -m experiments.train --config experiments/configs/base.py:tiny --workdir runs/base_tiny
    python -m experiments.train --config projects/shapes/configs/clip.py --workdir runs/shapes/clip

``experiments.train_base``, ``train_upsample``, ``train_inpaint`` and ``train_clip`` are the
same command that also checks the config's task. Rerunning a command resumes its run.
"""

import sys

from experiments.common import main

if __name__ == "__main__":
    sys.exit(main(None, __doc__.splitlines()[0]))
