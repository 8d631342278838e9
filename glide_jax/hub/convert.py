"""From OpenAI ``.pt`` files to glide_jax parameters, for any model or CLIP config.

A U-Net is one state dict (``{"model": sd}``); the noise-aware CLIP is two, one
per tower (``{"image": sd, "text": sd}``). Which reader applies is chosen by the
config's model family (``glide_jax.families``): its ``checkpoint_roles`` and ``convert_torch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.errors import InputError
from glide_jax.family import family_of
from glide_jax.hub.torch_zip import load_state_dict, load_state_dict_with_torch

Config = Union[ModelConfig, ClipConfig]
States = Mapping[str, Mapping[str, Any]]


def read_state(path, use_torch: bool = False) -> Dict[str, Any]:
    return load_state_dict_with_torch(path) if use_torch else load_state_dict(path)


def convert_state(config: Config, states: States) -> Any:
    """Convert loaded state dicts: ``{"model": sd}`` for a U-Net, ``{"image": sd, "text": sd}`` for CLIP.

    Returns Flax variables ``{"params": ...}``; strict about keys and shapes.
    """
    family = family_of(config)
    if not family.checkpoint_roles:
        raise InputError(f"the {family.name} family has no PyTorch checkpoint converter")
    if set(states) != set(family.checkpoint_roles):
        raise InputError(f"a {family.name} conversion needs the state dicts {list(family.checkpoint_roles)}, "
                         f"got {sorted(states)}")
    return family.convert_torch(config, states)


def convert_pt(config: Config, paths: Mapping[str, Union[str, Path]], use_torch: bool = False) -> Tuple[Config, Any]:
    """Read ``.pt`` files (``{"model": path}`` or ``{"image": path, "text": path}``) and convert them."""
    states = {role: read_state(path, use_torch) for role, path in paths.items()}
    return config, convert_state(config, states)
