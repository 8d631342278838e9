"""GLIDE's text-conditional diffusion U-Nets (``ModelConfig``): base, upsampler and their inpainting variants."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from glide_jax.config import ModelConfig
from glide_jax.families.registry import Inputs, ModelFamily, register_family
from glide_jax.hub.convert_unet import unet_from_torch
from glide_jax.models.unet import GlideUNet
from glide_jax.train.step import make_diffusion_step


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
        return tuple(args), kwargs

    def encode_prompts(self, tokenizer, config: ModelConfig, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, ctx] int32, mask [B, ctx] bool)`` for the U-Net's text transformer."""
        tokens, mask = tokenizer.encode_batch(list(prompts), config.unet.text.text_ctx)
        return np.asarray(tokens, np.int32), np.asarray(mask, bool)

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
        # Deferred: the preview pulls in the sampling loop, which runs that never draw one need not import.
        from glide_jax.train.preview import Previewer

        return Previewer(cfg, workdir, source, tokenize)


UNET = register_family(DiffusionUNetFamily())
