"""From OpenAI ``.pt`` files to glide_jax parameters, for any model or CLIP config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

from glide_jax.hub.torch_zip import load_state_dict, load_state_dict_with_torch
from glide_jax.config import ClipConfig, ModelConfig

Config = Union[ModelConfig, ClipConfig]


def read_state(path, use_torch: bool = False) -> Dict[str, Any]:
    return load_state_dict_with_torch(path) if use_torch else load_state_dict(path)


def convert_state(config: Config, states: Mapping[str, Mapping[str, Any]]) -> Any:
    """Convert loaded state dicts: ``{"model": sd}`` for a U-Net, ``{"image": sd, "text": sd}`` for CLIP.

    Returns Flax variables ``{"params": ...}``; strict about keys and shapes.
    """
    if isinstance(config, ClipConfig):
        from glide_jax.hub.convert_clip import convert_clip

        unknown = set(states) - {"image", "text"}
        if unknown or not {"image", "text"} <= set(states):
            raise ValueError(f"a CLIP conversion needs 'image' and 'text' state dicts, got {sorted(states)}")
        return {"params": convert_clip(config, states["image"], states["text"])}
    from glide_jax.hub.convert_unet import unet_from_torch

    if set(states) != {"model"}:
        raise ValueError(f"a U-Net conversion needs one 'model' state dict, got {sorted(states)}")
    return unet_from_torch(states["model"], config.unet)


def convert_pt(config: Config, paths: Mapping[str, Union[str, Path]], use_torch: bool = False) -> Tuple[Config, Any]:
    """Read ``.pt`` files (``{"model": path}`` or ``{"image": path, "text": path}``) and convert them."""
    states = {role: read_state(path, use_torch) for role, path in paths.items()}
    return config, convert_state(config, states)
