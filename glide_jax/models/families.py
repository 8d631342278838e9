"""One protocol per model family, so callers ask a config what it needs instead of testing its type.

GLIDE has two kinds of network: diffusion U-Nets (base, upsampler and their
inpainting variants, configured by a ``ModelConfig``) and the noise-aware
CLIP (a ``ClipConfig``). Code that builds, initialises, tokenizes for or
feeds either of them gets the family with :func:`family_of` and calls the
same methods on both. Code outside ``models/`` that must do something
family-specific (the training step, checkpoint conversion) keys a table by
``family.name`` rather than branching on config classes.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from glide_jax.config import ClipConfig, ModelConfig

Config = Union[ModelConfig, ClipConfig]
Inputs = Tuple[tuple, Dict[str, jax.Array]]


class DiffusionUNetFamily:
    """GLIDE's text-conditional diffusion U-Nets (``ModelConfig``)."""

    name = "unet"
    config_type = ModelConfig
    default_tokenizer = "glide-bpe"  # the released models' GPT-2 BPE
    text_keys = ("tokens", "mask")  # what encode_prompts returns, as batch keys

    @staticmethod
    def module(config: ModelConfig) -> nn.Module:
        from glide_jax.models.unet import GlideUNet

        return GlideUNet(config.unet)

    @staticmethod
    def image_size(config: ModelConfig) -> int:
        return config.unet.image_size

    @staticmethod
    def text_length(config: ModelConfig) -> int:
        return config.unet.text.text_ctx

    @staticmethod
    def vocab_size(config: ModelConfig) -> int:
        return config.unet.text.n_vocab

    @staticmethod
    def example_inputs(config: ModelConfig, batch: int = 1) -> Inputs:
        """Zero inputs of the right shapes, conditioning included (``low_res`` for an upsampler)."""
        u = config.unet
        s, c = u.image_size, u.in_channels
        args = [jnp.zeros((batch, s, s, c), jnp.float32), jnp.zeros((batch,), jnp.int32)]
        if u.text.width:
            args += [jnp.zeros((batch, u.text.text_ctx), jnp.int32), jnp.ones((batch, u.text.text_ctx), bool)]
        kwargs = {}
        if u.super_res:
            low = config.low_res_size or s // 4
            kwargs["low_res"] = jnp.zeros((batch, low, low, c), jnp.float32)
        return tuple(args), kwargs

    @staticmethod
    def encode_prompts(tokenizer, config: ModelConfig, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, ctx] int32, mask [B, ctx] bool)`` for the U-Net's text transformer."""
        tokens, mask = tokenizer.encode_batch(list(prompts), config.unet.text.text_ctx)
        return np.asarray(tokens, np.int32), np.asarray(mask, bool)


class NoisyClipFamily:
    """GLIDE's noise-aware CLIP (``ClipConfig``)."""

    name = "clip"
    config_type = ClipConfig
    default_tokenizer = "clip"  # CLIP's own BPE
    text_keys = ("tokens", "lens")  # what encode_prompts returns, as batch keys

    @staticmethod
    def module(config: ClipConfig) -> nn.Module:
        from glide_jax.models.clip import ClipModel

        return ClipModel(config)

    @staticmethod
    def image_size(config: ClipConfig) -> int:
        return config.image_size

    @staticmethod
    def text_length(config: ClipConfig) -> int:
        return config.max_text_len

    @staticmethod
    def vocab_size(config: ClipConfig) -> int:
        return config.n_vocab

    @staticmethod
    def example_inputs(config: ClipConfig, batch: int = 1) -> Inputs:
        s = config.image_size
        args = (jnp.zeros((batch, s, s, 3), jnp.float32), jnp.zeros((batch,), jnp.int32),
                jnp.zeros((batch, config.max_text_len), jnp.int32), jnp.ones((batch,), jnp.int32))
        return args, {}

    @staticmethod
    def encode_prompts(tokenizer, config: ClipConfig, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, ctx] int32, lens [B] int32)``; CLIP reads its text embedding at ``len - 1``."""
        tokens, extra = tokenizer.encode_batch(list(prompts), config.max_text_len)
        return np.asarray(tokens, np.int32), caption_lengths(extra)


FAMILIES = (DiffusionUNetFamily, NoisyClipFamily)


def family_of(config: Config):
    """The family of a model config; a clear error for anything else."""
    for family in FAMILIES:
        if isinstance(config, family.config_type):
            return family
    raise TypeError(f"not a model config: {type(config).__name__} (expected ModelConfig or ClipConfig)")


def caption_lengths(extra) -> np.ndarray:
    """CLIP text lengths from a tokenizer's second output: CLIP's own lengths, or a padding mask
    (sentencepiece). An empty caption still counts one position."""
    extra = np.asarray(extra)
    lens = extra.sum(axis=1) if extra.dtype == bool else extra
    return np.maximum(lens.astype(np.int32), 1)


def init_params(config: Config, key: jax.Array) -> Any:
    """Fresh parameters (boxed with logical axis names; ``nn.unbox`` gives plain arrays), no
    ``{"params": ...}`` wrapper."""
    family = family_of(config)
    args, kwargs = family.example_inputs(config, 1)
    return family.module(config).init(key, *args, **kwargs)["params"]


def abstract_params(config: Config) -> Any:
    """Plain ``ShapeDtypeStruct`` tree of the parameters, without allocating them."""
    return nn.unbox(jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0)))


def flat_shapes(params: Any) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
    """``path -> shape`` of a parameter tree of arrays or shape structs, boxed or not: what two trees
    are compared by when one must fit the model of the other."""
    flat = traverse_util.flatten_dict(nn.unbox(params))
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}
