"""From OpenAI ``.pt`` files to glide_jax parameters, for any model or CLIP config.

A U-Net is one state dict (``{"model": sd}``); the noise-aware CLIP is two, one
per tower (``{"image": sd, "text": sd}``). Which reader applies is chosen by the
config's model family (``glide_jax.models.families``), from ``CONVERTERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple, Union

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.hub.torch_zip import load_state_dict, load_state_dict_with_torch
from glide_jax.models.families import family_of

Config = Union[ModelConfig, ClipConfig]
States = Mapping[str, Mapping[str, Any]]


def read_state(path, use_torch: bool = False) -> Dict[str, Any]:
    return load_state_dict_with_torch(path) if use_torch else load_state_dict(path)


def _unet(config: ModelConfig, states: States) -> Any:
    from glide_jax.hub.convert_unet import unet_from_torch

    return unet_from_torch(states["model"], config.unet)


def _clip(config: ClipConfig, states: States) -> Any:
    from glide_jax.hub.convert_clip import convert_clip

    return {"params": convert_clip(config, states["image"], states["text"])}


class Converter(NamedTuple):
    roles: Tuple[str, ...]  # the state dicts a checkpoint of this family consists of
    convert: Callable[[Config, States], Any]  # (config, {role: state dict}) -> {"params": ...}


CONVERTERS: Dict[str, Converter] = {
    "unet": Converter(("model",), _unet),
    "clip": Converter(("image", "text"), _clip),
}


def convert_state(config: Config, states: States) -> Any:
    """Convert loaded state dicts: ``{"model": sd}`` for a U-Net, ``{"image": sd, "text": sd}`` for CLIP.

    Returns Flax variables ``{"params": ...}``; strict about keys and shapes.
    """
    family = family_of(config)
    converter = CONVERTERS[family.name]
    if set(states) != set(converter.roles):
        raise ValueError(f"a {family.name} conversion needs the state dicts {list(converter.roles)}, "
                         f"got {sorted(states)}")
    return converter.convert(config, states)


def convert_pt(config: Config, paths: Mapping[str, Union[str, Path]], use_torch: bool = False) -> Tuple[Config, Any]:
    """Read ``.pt`` files (``{"model": path}`` or ``{"image": path, "text": path}``) and convert them."""
    states = {role: read_state(path, use_torch) for role, path in paths.items()}
    return config, convert_state(config, states)
