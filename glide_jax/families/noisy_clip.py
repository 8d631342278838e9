"""GLIDE's noise-aware CLIP (``ClipConfig``): the image tower sees noised images, the guide of CLIP guidance.

:func:`clip_grad_fn` is the guide as the samplers take it: a ``Partial`` whose
leaves are the parameters and the captions' embeddings (computed once), so new
captions reuse the compiled sampling loop.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial
import numpy as np

from glide_jax.config import ClipConfig
from glide_jax.errors import InputError
from glide_jax.family import Inputs, ModelFamily, register_family
from glide_jax.hub.convert_clip import convert_clip
from glide_jax.models.clip import ClipModel, clip_guidance_grad, text_embeddings
from glide_jax.train.step import make_clip_step


def caption_lengths(extra) -> np.ndarray:
    """CLIP text lengths from a tokenizer's second output: CLIP's own lengths, or a padding mask
    (sentencepiece). An empty caption still counts one position."""
    extra = np.asarray(extra)
    lens = extra.sum(axis=1) if extra.dtype == bool else extra
    return np.maximum(lens.astype(np.int32), 1)


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
        raise InputError(f"CLIP guidance needs {config.image_size}px samples; the model samples {image_size}px")
    text_emb = clip_text_embedder(config)(params, tokens, lens)
    return Partial(_clip_grad(config), params, text_emb)


class NoisyClipFamily(ModelFamily):
    name = "clip"
    config_type = ClipConfig
    default_tokenizer = "clip"  # CLIP's own BPE
    text_keys = ("tokens", "lens")
    checkpoint_roles = ("image", "text")

    def module(self, config: ClipConfig) -> nn.Module:
        return ClipModel(config)

    def image_size(self, config: ClipConfig) -> int:
        return config.image_size

    def text_length(self, config: ClipConfig) -> int:
        return config.max_text_len

    def vocab_size(self, config: ClipConfig) -> int:
        return config.n_vocab

    def example_inputs(self, config: ClipConfig, batch: int = 1) -> Inputs:
        s = config.image_size
        args = (jnp.zeros((batch, s, s, 3), jnp.float32), jnp.zeros((batch,), jnp.int32),
                jnp.zeros((batch, config.max_text_len), jnp.int32), jnp.ones((batch,), jnp.int32))
        return args, {}

    def encode_prompts(self, tokenizer, config: ClipConfig, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, ctx] int32, lens [B] int32)``; CLIP reads its text embedding at ``len - 1``."""
        tokens, extra = tokenizer.encode_batch(list(prompts), config.max_text_len)
        return np.asarray(tokens, np.int32), caption_lengths(extra)

    def guidance_grad(self, config: ClipConfig, params, tokens, lengths, image_size: int) -> Partial:
        return clip_grad_fn(config, params, tokens, lengths, image_size)

    def convert_torch(self, config: ClipConfig, states) -> Any:
        return {"params": convert_clip(config, states["image"], states["text"])}

    def check_training(self, cfg) -> None:
        if cfg.train.microbatches != 1:
            raise InputError("the contrastive CLIP loss couples the whole batch: train.microbatches must be 1")
        if cfg.train.high_noise_fraction or cfg.train.mse_weighting != "eps":
            raise InputError("train.high_noise_fraction and train.mse_weighting shape the diffusion loss; "
                             "the CLIP step draws its timesteps uniformly and has no MSE")

    def pipeline_inputs(self, model_config: ClipConfig, data_config) -> Dict[str, Any]:
        # The contrastive loss needs every caption: no dropout (it exists for the diffusion models' guidance).
        return {"caption_dropout": 0.0}

    def make_train_step(self, model_config: ClipConfig, train_config, tx, *, mesh=None):
        return make_clip_step(model_config, train_config, tx, mesh=mesh)


NOISY_CLIP = register_family(NoisyClipFamily())
