"""GLIDE's text-conditional diffusion U-Nets (``ModelConfig``): base, upsampler and their inpainting variants.

The sampler-facing network (:func:`unet_model_fn`) is a ``jax.tree_util.Partial``:
parameters, encoded text and conditioning images are its leaves and the static
part is a function cached per config, so a second call with other prompts,
seeds or images reuses the compiled sampling loop. The caption is encoded once
per sample (not once per step) and handed to the U-Net as ``text_emb``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial
import numpy as np

from glide_jax.config import DiffusionConfig, ModelConfig, UNetConfig
from glide_jax.family import Inputs, ModelFamily, register_family
from glide_jax.hub.convert_unet import unet_from_torch
from glide_jax.models.unet import GlideUNet
from glide_jax.train.preview import Previewer
from glide_jax.train.step import make_diffusion_step


@functools.lru_cache(maxsize=None)
def unet_apply(config: UNetConfig):
    """``f(params, text_emb, cond, x, t) -> [B, H, W, 6]`` for one config (a stable object per config)."""
    model = GlideUNet(config)

    def apply(params, text_emb, cond, x, t):
        cond = dict(cond)
        interval = cond.pop("guidance_interval", None)
        if interval is not None:
            # A guidance-distilled student guided only on [low, high] model timesteps: w = 1 (the plain
            # conditional prediction) elsewhere, as interval guidance of the teacher computes.
            inside = (t >= interval[0]) & (t <= interval[1])
            cond["guidance_weight"] = jnp.where(inside, cond["guidance_weight"], 1.0)
        return model.apply(params, x, t, text_emb=text_emb, **cond)

    return apply


@functools.lru_cache(maxsize=None)
def text_encoder(config: UNetConfig):
    """Jitted ``f(params, tokens, mask) -> text_emb`` for one config."""
    model = GlideUNet(config)
    return jax.jit(lambda params, tokens, mask: model.apply(params, tokens, mask, method=GlideUNet.encode_text))


def unet_model_fn(config: UNetConfig, params: Any, tokens=None, mask=None, **cond) -> Partial:
    """The sampler-facing ``model_fn(x, t)`` of a GLIDE U-Net with its text encoded once.

    ``cond`` holds ``low_res``, ``inpaint_image``, ``inpaint_mask`` and (a guidance-distilled student,
    ``unet.guidance_embed``) ``guidance_weight`` ``[B]`` as the model needs them, plus, for such a
    student, an optional ``guidance_interval`` ``[low, high]`` of model timesteps outside which w is 1.
    """
    text_emb = text_encoder(config)(params, tokens, mask) if config.text.width else None
    cond = {k: jnp.asarray(v, jnp.float32) for k, v in cond.items() if v is not None}
    return Partial(unet_apply(config), params, text_emb, cond)


class DiffusionUNetFamily(ModelFamily):
    name = "unet"
    config_type = ModelConfig
    default_tokenizer = "glide-bpe"  # the released models' GPT-2 BPE
    text_keys = ("tokens", "mask")
    checkpoint_roles = ("model",)
    samples_images = True

    def module(self, config: ModelConfig) -> nn.Module:
        return GlideUNet(config.unet)

    def image_size(self, config: ModelConfig) -> int:
        return config.unet.image_size

    def text_length(self, config: ModelConfig) -> int:
        return config.unet.text.text_ctx

    def vocab_size(self, config: ModelConfig) -> int:
        return config.unet.text.n_vocab

    def kind(self, config: ModelConfig) -> str:
        return config.kind

    def compute_dtype(self, config: ModelConfig) -> str:
        return config.unet.dtype

    def with_compute_dtype(self, config: ModelConfig, dtype: str) -> ModelConfig:
        return dataclasses.replace(config, unet=dataclasses.replace(config.unet, dtype=dtype))

    def example_inputs(self, config: ModelConfig, batch: int = 1) -> Inputs:
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
        if u.guidance_embed:
            kwargs["guidance_weight"] = jnp.ones((batch,), jnp.float32)
        return tuple(args), kwargs

    def encode_prompts(self, tokenizer, config: ModelConfig, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, ctx] int32, mask [B, ctx] bool)`` for the U-Net's text transformer."""
        tokens, mask = tokenizer.encode_batch(list(prompts), config.unet.text.text_ctx)
        return np.asarray(tokens, np.int32), np.asarray(mask, bool)

    def diffusion_config(self, config: ModelConfig) -> DiffusionConfig:
        return config.diffusion

    def channels(self, config: ModelConfig) -> int:
        return config.unet.in_channels

    def is_super_res(self, config: ModelConfig) -> bool:
        return config.unet.super_res

    def low_res_size(self, config: ModelConfig) -> Optional[int]:
        return config.low_res_size

    def is_inpaint(self, config: ModelConfig) -> bool:
        return config.unet.inpaint

    def takes_guidance_weight(self, config: ModelConfig) -> bool:
        return config.unet.guidance_embed

    def model_fn(self, config: ModelConfig, params, tokens, mask, **cond) -> Partial:
        return unet_model_fn(config.unet, params, tokens, mask, **cond)

    def convert_torch(self, config: ModelConfig, states) -> Any:
        return unet_from_torch(states["model"], config.unet)

    def pipeline_inputs(self, model_config: ModelConfig, data_config) -> Dict[str, Any]:
        unet = model_config.unet
        return {"low_res_size": model_config.low_res_size if unet.super_res else None, "inpaint": unet.inpaint,
                "caption_dropout": data_config.caption_dropout}

    def synthetic_conditioning(self, model_config: ModelConfig, batch_size: int, rng) -> Dict[str, Any]:
        out, unet = {}, model_config.unet
        if unet.super_res:
            low = model_config.low_res_size
            out["low_res"] = rng.uniform(-1, 1, (batch_size, low, low, 3)).astype(np.float32)
        if unet.inpaint:
            out["inpaint_mask"] = np.ones((batch_size, unet.image_size, unet.image_size, 1), np.float32)
        return out

    def make_train_step(self, model_config: ModelConfig, train_config, tx, *, mesh=None):
        return make_diffusion_step(model_config, train_config, tx, mesh=mesh)

    def previewer(self, cfg, workdir, source, tokenize) -> Optional[Any]:
        return Previewer(cfg, workdir, source, tokenize)


UNET = register_family(DiffusionUNetFamily())
