"""GLIDE's inpainting upsampler: a trained upsampler fine-tuned with four more input channels.

    python -m experiments.train --config experiments/configs/upsample_inpaint.py:released \\
        --workdir runs/upsample_inpaint --set data.path=<prepared dataset>

Variant ``released``: the architecture of OpenAI's released upsample-inpaint
model, fine-tuned from the released upsampler (``train.init_from="upsample"``,
converted on first use) or from an upsampler run of ``upsample.py:released``.
"""

from experiments.configs import _common as common
from experiments.configs import upsample
from glide_jax.train.experiment import ExperimentConfig

VARIANTS = ("released",)


def get_config(variant: str) -> ExperimentConfig:
    """The upsampler's inpainting fine-tune; ``variant`` is one of ``VARIANTS``."""
    return common.pick({"released": _released}, variant, "upsample_inpaint")


def _released() -> ExperimentConfig:
    # OpenAI's released upsample-inpaint architecture, from the released upsampler weights
    return common.released_inpaint_variant(upsample.get_config("released"), name="upsample_inpaint_released")
