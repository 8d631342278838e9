"""Fine-tune a base or upsampler model for inpainting (4 zero-initialised extra input channels).

    python -m experiments.train_inpaint --config experiments/configs/inpaint.py:tiny --workdir runs/inpaint_tiny \
        --set train.init_from=runs/base_tiny

``train.init_from`` may be a training workdir, a converted model directory, a
released name (``base``, ``upsample``) or an OpenAI ``.pt`` file.

An alias of ``python -m experiments.train`` that also checks the config's task is ``inpaint``.
"""

import sys

from experiments.common import main

if __name__ == "__main__":
    sys.exit(main("inpaint", __doc__.splitlines()[0]))
