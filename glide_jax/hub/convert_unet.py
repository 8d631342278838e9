"""PyTorch GLIDE U-Net state dicts (released checkpoints, fixtures) ↔ Flax parameters.

The torch checkpoint holds the U-Net alone, so these functions take a
``UNetConfig``; the parameter shapes they check against come from
``glide_jax.family.abstract_params`` of that U-Net.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import numpy as np

from glide_jax.config import ModelConfig, UNetConfig
from glide_jax.hub import torch_layout
from glide_jax.family import abstract_params


def _abstract(config: UNetConfig) -> Dict[str, Any]:
    # Parameter shapes depend on the U-Net only (not on the diffusion or the low-res size).
    return {"params": abstract_params(ModelConfig(config))}


def torch_shapes(config: UNetConfig) -> Dict[str, Tuple[int, ...]]:
    """Every PyTorch key this config's model has, with its PyTorch shape."""
    return {k: v[2] for k, v in torch_layout.layout(_abstract(config)).items()}


def unet_from_torch(state_dict: Mapping[str, np.ndarray], config: UNetConfig) -> Dict[str, Any]:
    """Convert a reference state dict to ``{"params": ...}`` for ``GlideUNet(config)``; strict."""
    if not isinstance(config, UNetConfig):
        raise TypeError(f"unet_from_torch needs a UNetConfig (a ModelConfig's .unet), got {type(config).__name__}")
    return torch_layout.from_torch(state_dict, _abstract(config), "GLIDE U-Net")
