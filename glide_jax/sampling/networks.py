"""Networks as sampler callables: ``model_fn(x, t)`` and CLIP ``cond_fn`` built as pytrees.

The samplers compile once per callable *structure*; parameters, encoded text
and conditioning images travel as leaves of a ``jax.tree_util.Partial``. The
static part is a function cached per config, so a second call with other
prompts, seeds or images reuses the compiled loop instead of recompiling.
The caption is encoded once per sample (not once per step) and handed to the
U-Net as ``text_emb``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from glide_jax.config import ClipConfig, UNetConfig
from glide_jax.models.clip import ClipModel, clip_guidance_grad, text_embeddings
from glide_jax.models.unet import GlideUNet


@functools.lru_cache(maxsize=None)
def unet_apply(config: UNetConfig):
    """``f(params, text_emb, cond, x, t) -> [B, H, W, 6]`` for one config (a stable object per config)."""
    model = GlideUNet(config)

    def apply(params, text_emb, cond, x, t):
        return model.apply(params, x, t, text_emb=text_emb, **cond)

    return apply


@functools.lru_cache(maxsize=None)
def text_encoder(config: UNetConfig):
    """Jitted ``f(params, tokens, mask) -> text_emb`` for one config."""
    model = GlideUNet(config)
    return jax.jit(lambda params, tokens, mask: model.apply(params, tokens, mask, method=GlideUNet.encode_text))


def unet_model_fn(config: UNetConfig, params: Any, tokens=None, mask=None, **cond) -> Partial:
    """The sampler-facing ``model_fn(x, t)`` of a GLIDE U-Net with its text encoded once.

    ``cond`` holds ``low_res``, ``inpaint_image``, ``inpaint_mask`` as the model needs them.
    """
    text_emb = text_encoder(config)(params, tokens, mask) if config.text.width else None
    cond = {k: jnp.asarray(v, jnp.float32) for k, v in cond.items() if v is not None}
    return Partial(unet_apply(config), params, text_emb, cond)


@functools.lru_cache(maxsize=None)
def _clip_grad(config: ClipConfig):
    model = ClipModel(config)

    def grad(params, text_emb, x, t):
        return clip_guidance_grad(model, params, x, t, text_emb, 1.0)

    return grad


@functools.lru_cache(maxsize=None)
def clip_text_embedder(config: ClipConfig):
    model = ClipModel(config)
    return jax.jit(lambda params, tokens, lens: text_embeddings(model, params, tokens, lens))


def clip_grad_fn(config: ClipConfig, params: Any, tokens, lens, image_size: Optional[int] = None) -> Partial:
    """``clip_grad(x, t) -> d/dx exp(logit_scale) <z_text, z_image>`` for the given captions."""
    if image_size is not None and image_size != config.image_size:
        raise ValueError(f"CLIP guidance needs {config.image_size}px samples; the model samples {image_size}px")
    text_emb = clip_text_embedder(config)(params, tokens, lens)
    return Partial(_clip_grad(config), params, text_emb)
