"""PyTorch GLIDE U-Net state dicts (released checkpoints, fixtures) ↔ Flax parameters."""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import jax
import numpy as np

from glide_jax.hub import torch_layout as TL
from glide_jax.config import ModelConfig, UNetConfig
from glide_jax.models.unet import GlideUNet, example_inputs


def abstract_params(config: UNetConfig, low_res_size=None):
    """Parameter shapes of a model, computed with ``jax.eval_shape`` (no memory for the weights)."""
    inputs = example_inputs(config, 1, low_res_size)
    model = GlideUNet(config)
    return jax.eval_shape(lambda rng: model.init(rng, *inputs, **inputs.kwargs), jax.random.key(0))


def torch_layout(config: UNetConfig) -> Dict[str, Tuple[int, ...]]:
    """Every PyTorch key this config's model has, with its PyTorch shape."""
    return {k: v[2] for k, v in TL.layout(abstract_params(config)).items()}


def unet_from_torch(state_dict: Mapping[str, np.ndarray], config: UNetConfig | ModelConfig):
    """Convert a reference state dict to ``{"params": ...}`` for ``GlideUNet(config)``; strict."""
    if isinstance(config, ModelConfig):
        config = config.unet
    return TL.from_torch(state_dict, abstract_params(config), "GLIDE U-Net")


def unet_to_torch(params) -> Dict[str, np.ndarray]:
    return TL.to_torch_state(params)
