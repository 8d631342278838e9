"""GLIDE's text transformer: caption tokens → (conditioning vector, per-token context).

The final position's output (after the optional final LayerNorm) is projected to
the U-Net's time-embedding width and added to the timestep embedding; all
positions are handed to every attention layer of the U-Net as extra keys and
values. Attention is bidirectional and unmasked; with ``padding`` the padded
positions use a learned ``padding_embedding`` instead of token + position.
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax.config import TextConfig
from glide_jax.errors import InputError
from glide_jax.models import layers as L
from glide_jax.models import partitioning as P


class ResidualAttentionBlock(nn.Module):
    width: int
    heads: int
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = L.layer_norm("ln_1")(x).astype(self.dtype)
        x = x + _SelfAttention(self.width, self.heads, self.dtype, self.attention, name="attn")(h)
        h = L.layer_norm("ln_2")(x).astype(self.dtype)
        x = x + _MLP(self.width, self.dtype, name="mlp")(h)
        return x


class _SelfAttention(nn.Module):
    width: int
    heads: int
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        qkv = L.dense(3 * self.width, "c_qkv", (P.EMBED, P.HEADS), self.dtype)(x)
        q, k, v = L.split_heads_qkv(qkv, self.heads, 3)
        return L.dense(self.width, "c_proj", (P.HEADS, P.EMBED), self.dtype)(L.attention(q, k, v, implementation=self.attention))


class _MLP(nn.Module):
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = L.dense(4 * self.width, "c_fc", (P.EMBED, P.MLP), self.dtype)(x)
        h = nn.gelu(h, approximate=False)
        return L.dense(self.width, "c_proj", (P.MLP, P.EMBED), self.dtype)(h)


class Transformer(nn.Module):
    width: int
    layers: int
    heads: int
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = ResidualAttentionBlock(self.width, self.heads, self.dtype, self.attention, name=f"resblocks_{i}")(x)
        return x


class TextEncoder(nn.Module):
    """Encodes ``tokens`` [B, ctx] (and ``mask`` [B, ctx]) into ``(xf_proj [B, proj_dim], xf_out [B, ctx, width])``."""

    config: TextConfig
    proj_dim: int
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array | None) -> Tuple[jax.Array, jax.Array]:
        cfg = self.config
        if tokens.ndim != 2 or tokens.shape[1] != cfg.text_ctx:
            raise InputError(f"tokens must have shape [batch, {cfg.text_ctx}], got {tuple(tokens.shape)}")
        emb_init = nn.initializers.normal(0.02)
        token_embedding = nn.Embed(
            cfg.n_vocab,
            cfg.width,
            name="token_embedding",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            embedding_init=P.param_with_axes(emb_init, (P.VOCAB, P.EMBED)),
        )
        positional = self.param(
            "positional_embedding", P.param_with_axes(nn.initializers.normal(0.01), (P.CTX, P.EMBED)),
            (cfg.text_ctx, cfg.width), jnp.float32,
        )
        x = token_embedding(tokens).astype(jnp.float32) + positional[None]
        if cfg.padding:
            if mask is None:
                raise InputError("this text transformer uses padding embeddings: a token mask is required")
            if mask.shape != tokens.shape:
                raise InputError(f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}")
            padding = self.param(
                "padding_embedding", P.param_with_axes(nn.initializers.normal(0.01), (P.CTX, P.EMBED)),
                (cfg.text_ctx, cfg.width), jnp.float32,
            )
            x = jnp.where(mask[..., None].astype(bool), x, padding[None])
        x = Transformer(cfg.width, cfg.layers, cfg.heads, self.dtype, self.attention, name="transformer")(x.astype(self.dtype))
        if cfg.final_ln:
            x = L.layer_norm("final_ln")(x)
        x = x.astype(jnp.float32)
        xf_proj = L.dense(self.proj_dim, "transformer_proj", (P.EMBED, P.MLP), self.dtype)(x[:, -1])
        return xf_proj.astype(jnp.float32), x
