"""The family registry and the interface every model family implements.

``family_of(config)`` finds a config's family by the config's class;
``register_family`` adds one. The built-in families are imported on the first
look-up (:func:`_load_builtin_families`) rather than at import time: they build
on training and hub modules that themselves look families up here, so importing
them from this module's top would tie those modules into an import circle.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np

from glide_jax.config import register_config_types
from glide_jax.errors import InputError
from glide_jax.named import Registry

Inputs = Tuple[tuple, Dict[str, jax.Array]]

BUILTIN_FAMILY_MODULES = ("glide_jax.families.unet", "glide_jax.families.noisy_clip")

_FAMILIES: Registry["ModelFamily"] = Registry("model family")
_builtins_loaded = False


class ModelFamily:
    """What differs between kinds of network. Subclass it, fill in the methods, ``register_family`` it.

    Attributes: ``name`` (unique, recorded nowhere but messages), ``config_type``
    (the frozen dataclass that configures the family; ``family_of`` dispatches on
    it and ``glide_jax.config`` reads and writes it as JSON), ``default_tokenizer``
    (a ``glide_jax.tokenizers.get_tokenizer`` spec), ``text_keys`` (the batch keys
    ``encode_prompts`` fills), ``checkpoint_roles`` (the state dicts a PyTorch
    checkpoint of the family consists of; empty when it has no converter) and
    ``samples_images`` (whether the sampling pipeline can draw with it).
    """

    name: str = ""
    config_type: type = type(None)
    default_tokenizer: str = "sentencepiece"
    text_keys: Tuple[str, ...] = ("tokens", "mask")
    checkpoint_roles: Tuple[str, ...] = ()
    samples_images: bool = False

    # -- the network -------------------------------------------------------------------------------------------
    def module(self, config) -> nn.Module:
        raise NotImplementedError

    def image_size(self, config) -> int:
        raise NotImplementedError

    def text_length(self, config) -> int:
        raise NotImplementedError

    def vocab_size(self, config) -> int:
        raise NotImplementedError

    def kind(self, config) -> str:
        """The role a model of this config plays (e.g. ``"base"``, ``"upsample"``); what tasks accept."""
        return self.name

    def compute_dtype(self, config) -> str:
        return getattr(config, "dtype", "float32")

    def with_compute_dtype(self, config, dtype: str):
        return dataclasses.replace(config, dtype=dtype)

    def example_inputs(self, config, batch: int = 1) -> Inputs:
        """``(args, kwargs)`` of zeros that ``module(config).init`` accepts."""
        raise NotImplementedError

    def encode_prompts(self, tokenizer, config, prompts: Sequence[str]) -> Tuple[np.ndarray, ...]:
        """The text inputs of ``prompts``, one array per entry of ``text_keys``."""
        raise NotImplementedError

    # -- sampling (families whose ``samples_images``) --------------------------------------------------------
    def diffusion_config(self, config):
        """The ``DiffusionConfig`` (noise schedule and steps) the network was trained on."""
        raise NotImplementedError

    def channels(self, config) -> int:
        """Channels of the images the network denoises."""
        return 3

    def is_super_res(self, config) -> bool:
        """Whether the network is conditioned on a low-resolution image (``low_res``): an upsampler."""
        return False

    def low_res_size(self, config) -> Optional[int]:
        return None

    def is_inpaint(self, config) -> bool:
        """Whether the network reads the known image and its mask (``inpaint_image``, ``inpaint_mask``)."""
        return False

    def takes_guidance_weight(self, config) -> bool:
        """Whether the network reads a classifier-free guidance weight (``guidance_weight [B]``) and so
        guides itself in one evaluation (a guidance-distilled student)."""
        return False

    def model_fn(self, config, params, tokens, mask, **cond):
        """The sampler-facing ``model_fn(x, t) -> [B, H, W, 2C]`` (eps and variance channels) as a
        ``jax.tree_util.Partial``, its text encoded once; ``cond`` holds the conditioning it reads."""
        raise NotImplementedError

    def guidance_grad(self, config, params, tokens, lengths, image_size: int):
        """For a family that guides sampling (CLIP guidance): ``grad(x, t)`` of its image-text similarity
        for the given captions, as a ``jax.tree_util.Partial``."""
        raise InputError(f"a {self.name} model cannot guide sampling")

    # -- checkpoints -------------------------------------------------------------------------------------------
    def convert_torch(self, config, states) -> Any:
        """``{"params": ...}`` from ``{role: state dict}`` (the roles of ``checkpoint_roles``)."""
        raise InputError(f"the {self.name} family has no PyTorch converter")

    # -- training ----------------------------------------------------------------------------------------------
    def check_training(self, cfg) -> None:
        """Refuse an ``ExperimentConfig`` whose training settings this family cannot honour."""

    def pipeline_inputs(self, model_config, data_config) -> Dict[str, Any]:
        """Options of ``glide_jax.data.input_pipeline.PipelineConfig`` beyond size, batch and seed."""
        return {"caption_dropout": data_config.caption_dropout}

    def synthetic_conditioning(self, model_config, batch_size: int, rng: np.random.Generator) -> Dict[str, Any]:
        """Image conditioning of a synthetic batch (benchmarks), beyond ``image`` and the text keys."""
        return {}

    def make_train_step(self, model_config, train_config, tx, *, mesh=None):
        """The pure ``(state, batch) -> (state, metrics)`` step of this family."""
        raise NotImplementedError

    def previewer(self, cfg, workdir, source, tokenize) -> Optional[Any]:
        """A callable ``(variables, step) -> path or None`` drawing training previews; None: no previews."""
        return None

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` (an instance); its name and config type must be new. Returns it."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_family takes a ModelFamily instance, got {type(family).__name__}")
    if not isinstance(family.config_type, type):
        raise ValueError(f"model family {family.name!r} needs a config_type class")
    clash = [f.name for f in _FAMILIES.values() if f.config_type is family.config_type]
    if clash and family.name not in _FAMILIES:  # a second family of one config (a name taken: register says so)
        raise ValueError(f"{family.config_type.__name__} configures the {clash[0]!r} family already")
    _FAMILIES.register(family.name, family)
    register_config_types(family.config_type)
    return family


def _load_builtin_families() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_FAMILY_MODULES:
            importlib.import_module(module)


def registered_families() -> List[ModelFamily]:
    _load_builtin_families()
    return _FAMILIES.values()


def family_named(name: str) -> ModelFamily:
    _load_builtin_families()
    return _FAMILIES.get(name)


def family_of(config) -> ModelFamily:
    """The family of a model config; a clear error for anything else."""
    _load_builtin_families()
    for family in _FAMILIES.values():
        if isinstance(config, family.config_type):
            return family
    known = ", ".join(f.config_type.__name__ for f in _FAMILIES.values())
    raise TypeError(f"not a model config: {type(config).__name__} (expected one of {known})")


def init_params(config, key: jax.Array) -> Any:
    """Fresh parameters (boxed with logical axis names; ``nn.unbox`` gives plain arrays), no
    ``{"params": ...}`` wrapper."""
    family = family_of(config)
    args, kwargs = family.example_inputs(config, 1)
    return family.module(config).init(key, *args, **kwargs)["params"]


def abstract_params(config) -> Any:
    """Plain ``ShapeDtypeStruct`` tree of the parameters, without allocating them."""
    return nn.unbox(jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0)))
