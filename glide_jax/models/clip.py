"""GLIDE's noise-aware CLIP in Flax: the model behind CLIP-guided sampling.

GLIDE steers a diffusion sample towards a prompt by following the gradient of a
CLIP similarity with respect to the *noisy* image x_t. A stock CLIP would see
only noise at large t, so OpenAI trained a CLIP whose ViT image tower also gets
the diffusion timestep (a learned per-t token in place of the class token).
This module rebuilds both towers so that the released ``clip/image-enc`` and
``clip/text-enc`` checkpoints load into it unchanged (see
``glide_jax.hub.convert_clip``) and reproduces their numerics:

* images arrive in [-1, 1] (NHWC); they are mapped to 0..255 and whitened with
  OpenAI CLIP's RGB statistics before a bias-free patch convolution;
* attention uses separate q/k/v projections, the key one without bias, and
  scales q and k *each* by ``d**-0.25``. The reference pads the context to a
  multiple of 32 and masks with an additive ``-1e10``; padded keys get exactly
  zero weight after the softmax in float32, so the padding is not materialised
  here, only the additive causal mask of the text tower is kept;
* embeddings are normalised as ``z / (||z|| + 1e-12)``.

Parameters are float32 and carry logical axis names; matmuls run in
``ClipConfig.dtype`` while layer norms, softmax and the residual stream stay
float32, as in the reference.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.config import ClipConfig
from glide_jax.errors import InputError
from glide_jax.models.partitioning import CTX, EMBED, HEADS, KERNEL, MLP, NORM, PATCH, VOCAB, param_with_axes

# OpenAI CLIP's per-channel statistics of RGB images on the 0..255 scale.
CLIP_RGB_MEAN = (122.77093945, 116.74601272, 104.09373519)
CLIP_RGB_STD = (68.50053285, 66.63215831, 70.32316309)

LN_EPS = 1e-5
MASK_VALUE = -1e10  # additive logit for forbidden (future) keys, as in the reference


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


def _compute_dtype(cfg: ClipConfig):
    return jnp.dtype(cfg.dtype)


class LayerNorm32(nn.Module):
    """LayerNorm over the last axis in float32 (biased variance, eps 1e-5 unless given), returning float32."""

    eps: float = LN_EPS

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        scale = self.param("scale", param_with_axes(nn.initializers.ones, (NORM,)), (width,), jnp.float32)
        bias = self.param("bias", param_with_axes(nn.initializers.zeros, (NORM,)), (width,), jnp.float32)
        x = x.astype(jnp.float32)
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + self.eps) * scale + bias


def _dense(features: int, names: Tuple[str, str], std: float, dtype, use_bias: bool = True, name: Optional[str] = None):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=param_with_axes(_normal(std), names),
        bias_init=param_with_axes(nn.initializers.zeros, (names[1],)),
        name=name,
    )


class ClipAttention(nn.Module):
    """Pre-LN multi-head self-attention residual branch (returns ``x + attn(ln(x))``).

    GLIDE's CLIP has no key bias; the standard (Hugging Face) CLIP sets ``key_bias`` and its own ``eps``.
    """

    width: int
    heads: int
    n_resblocks: int
    causal: bool
    dtype: Any = jnp.float32
    key_bias: bool = False
    eps: float = LN_EPS

    @nn.compact
    def __call__(self, x):
        b, n, _ = x.shape
        d = self.width // self.heads
        h = LayerNorm32(self.eps, name="ln")(x)
        std = 1.0 / math.sqrt(self.width)
        q = _dense(self.width, (EMBED, HEADS), std, self.dtype, name="q")(h)
        k = _dense(self.width, (EMBED, HEADS), std, self.dtype, use_bias=self.key_bias, name="k")(h)
        v = _dense(self.width, (EMBED, HEADS), std, self.dtype, name="v")(h)
        q, k, v = (a.reshape(b, n, self.heads, d) for a in (q, k, v))

        scale = math.sqrt(1.0 / math.sqrt(d))  # applied to q and to k separately
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", q * scale, k * scale, preferred_element_type=jnp.float32
        ).astype(jnp.float32)
        if self.causal:
            allowed = np.tril(np.ones((n, n), dtype=bool))
            logits = logits + jnp.asarray(np.where(allowed, 0.0, MASK_VALUE), jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v.astype(self.dtype))
        out = out.reshape(b, n, self.width)
        out_std = 1.0 / math.sqrt(self.width * self.n_resblocks**2)
        out = _dense(self.width, (HEADS, EMBED), out_std, self.dtype, name="out")(out)
        return x + out.astype(jnp.float32)


def quick_gelu(x):
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


# Activations by the names Hugging Face configs give them (``hidden_act``).
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "quick_gelu": quick_gelu,
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
}


class ClipMlp(nn.Module):
    """Pre-LN MLP residual branch: ``hidden`` units (default 4x width), exact (erf) GELU unless ``activation`` says."""

    width: int
    n_resblocks: int
    dtype: Any = jnp.float32
    activation: str = "gelu"
    hidden: Optional[int] = None
    eps: float = LN_EPS

    @nn.compact
    def __call__(self, x):
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        hidden = self.hidden or 4 * self.width
        h = LayerNorm32(self.eps, name="ln")(x)
        h = _dense(hidden, (EMBED, MLP), math.sqrt(2.0 / hidden), self.dtype, name="fc1")(h)
        h = ACTIVATIONS[self.activation](h)
        std = 1.0 / math.sqrt(self.width * self.n_resblocks**2)
        h = _dense(self.width, (MLP, EMBED), std, self.dtype, name="fc2")(h)
        return x + h.astype(jnp.float32)


class ClipBlock(nn.Module):
    """Attention then MLP, both pre-LN residual branches; the defaults are GLIDE's CLIP."""

    width: int
    heads: int
    n_resblocks: int
    causal: bool
    dtype: Any = jnp.float32
    key_bias: bool = False
    activation: str = "gelu"
    hidden: Optional[int] = None
    eps: float = LN_EPS

    @nn.compact
    def __call__(self, x):
        x = ClipAttention(self.width, self.heads, self.n_resblocks, self.causal, self.dtype, self.key_bias, self.eps,
                          name="attn")(x)
        return ClipMlp(self.width, self.n_resblocks, self.dtype, self.activation, self.hidden, self.eps,
                       name="mlp")(x)


def _check_int(name: str, a) -> None:
    if not jnp.issubdtype(jnp.asarray(a).dtype, jnp.integer):
        raise InputError(f"{name} must hold integers (it indexes an embedding table), got dtype {a.dtype}")


class ClipImageEncoder(nn.Module):
    """Timestep-aware ViT: ``(x in [-1,1] NHWC [B,S,S,3], int t [B]) -> z [B, n_embd]`` (unnormalised).

    ``t`` indexes the learned timestep table directly (original 0..n_timesteps-1 steps, not respaced ones).
    """

    config: ClipConfig

    @property
    def width(self) -> int:
        return self.config.n_head_image * self.config.n_head_state_image

    def _check_inputs(self, x, t) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            hint = " (it looks NCHW; this library is NHWC)" if x.ndim == 4 and x.shape[1] == 3 else ""
            raise InputError(f"CLIP image encoder expects images of shape [B, {s}, {s}, 3], got {x.shape}{hint}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise InputError(f"timesteps must have shape [{x.shape[0]}] to match the images, got {t.shape}")
        _check_int("timesteps", t)

    @nn.compact
    def __call__(self, x, t):
        cfg, width = self.config, self.width
        dtype = _compute_dtype(cfg)
        x, t = jnp.asarray(x), jnp.asarray(t)
        self._check_inputs(x, t)
        p = cfg.patch_size
        n_tokens = 1 + (cfg.image_size // p) ** 2

        mean = jnp.asarray(CLIP_RGB_MEAN, jnp.float32)
        std = jnp.asarray(CLIP_RGB_STD, jnp.float32)
        x = ((x.astype(jnp.float32) + 1.0) * 127.5 - mean) / std
        patches = nn.Conv(
            width,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            dtype=dtype,
            param_dtype=jnp.float32,
            kernel_init=param_with_axes(_normal(math.sqrt(2.0 / (width * p * p))), (KERNEL, KERNEL, PATCH, EMBED)),
            name="patch_embed",
        )(x)
        patches = patches.reshape(x.shape[0], -1, width).astype(jnp.float32)

        w_t = self.param(
            "timestep_embedding",
            param_with_axes(_normal(1.0 / math.sqrt(width)), (VOCAB, EMBED)),
            (cfg.n_timesteps, width),
            jnp.float32,
        )
        w_pos = self.param(
            "position_embedding",
            param_with_axes(_normal(1.0 / math.sqrt(width)), (PATCH, EMBED)),
            (n_tokens, width),
            jnp.float32,
        )
        first = jnp.take(w_t, t.astype(jnp.int32), axis=0)[:, None, :]
        h = jnp.concatenate([first, patches], axis=1) + w_pos[None]
        h = LayerNorm32(name="ln_pre")(h)

        n_res = 2 * cfg.n_xf_blocks_image
        for i in range(cfg.n_xf_blocks_image):
            h = ClipBlock(width, cfg.n_head_image, n_res, False, dtype, name=f"block_{i}")(h)

        h = LayerNorm32(name="ln_post")(h[:, 0])
        proj_std = math.sqrt(2.0 / (width + cfg.n_embd))
        return _dense(cfg.n_embd, (EMBED, MLP), proj_std, dtype, use_bias=False, name="proj")(h).astype(jnp.float32)


class ClipTextEncoder(nn.Module):
    """Causal text transformer: ``(tokens [B, max_text_len], lens [B]) -> z [B, n_embd]`` read at ``lens-1``.

    ``lens`` must be in ``1..max_text_len`` (the tokenizer guarantees it); it is not checked on traced values.
    """

    config: ClipConfig

    @property
    def width(self) -> int:
        return self.config.n_head_text * self.config.n_head_state_text

    def _check_inputs(self, tokens, lens) -> None:
        n = self.config.max_text_len
        if tokens.ndim != 2 or tokens.shape[1] != n:
            raise InputError(f"CLIP text encoder expects tokens of shape [B, {n}] (padded), got {tokens.shape}")
        if lens.ndim != 1 or lens.shape[0] != tokens.shape[0]:
            raise InputError(f"lens must have shape [{tokens.shape[0]}] to match the tokens, got {lens.shape}")
        _check_int("tokens", tokens)
        _check_int("lens", lens)

    @nn.compact
    def __call__(self, tokens, lens):
        cfg, width = self.config, self.width
        dtype = _compute_dtype(cfg)
        tokens, lens = jnp.asarray(tokens), jnp.asarray(lens)
        self._check_inputs(tokens, lens)

        w_voc = self.param(
            "token_embedding", param_with_axes(_normal(0.02), (VOCAB, EMBED)), (cfg.n_vocab, width), jnp.float32
        )
        w_pos = self.param(
            "position_embedding", param_with_axes(_normal(0.01), (CTX, EMBED)), (cfg.max_text_len, width), jnp.float32
        )
        h = jnp.take(w_voc, tokens.astype(jnp.int32), axis=0) + w_pos[None]

        n_res = 2 * cfg.n_xf_blocks_text
        for i in range(cfg.n_xf_blocks_text):
            h = ClipBlock(width, cfg.n_head_text, n_res, True, dtype, name=f"block_{i}")(h)

        last = (lens.astype(jnp.int32) - 1)[:, None, None]
        h = jnp.take_along_axis(h, last, axis=1)[:, 0]
        h = LayerNorm32(name="ln_post")(h)
        proj_std = math.sqrt(2.0 / (width + cfg.n_embd))
        return _dense(cfg.n_embd, (EMBED, MLP), proj_std, dtype, use_bias=False, name="proj")(h).astype(jnp.float32)


def normalize(z):
    """``z / (||z|| + 1e-12)`` along the last axis, the reference's embedding normalisation."""
    return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)


class ClipModel(nn.Module):
    """Both towers plus the (log) logit scale; ``__call__`` returns normalised (image, text) embeddings.

    Parameter tree: ``{"image_encoder": ..., "text_encoder": ..., "logit_scale": ()}``
    with ``logit_scale`` stored as a log, like the reference (log 100 for the release).
    """

    config: ClipConfig

    def setup(self):
        self.image_encoder = ClipImageEncoder(self.config)
        self.text_encoder = ClipTextEncoder(self.config)
        scale = float(np.log(np.float32(self.config.logit_scale)))
        self.logit_scale = self.param(
            "logit_scale", param_with_axes(nn.initializers.constant(scale), ()), (), jnp.float32
        )

    def encode_image(self, x, t):
        return self.image_encoder(x, t)

    def encode_text(self, tokens, lens):
        return self.text_encoder(tokens, lens)

    def image_embeddings(self, x, t):
        return normalize(self.image_encoder(x, t))

    def text_embeddings(self, tokens, lens):
        return normalize(self.text_encoder(tokens, lens))

    def guidance_objective(self, x, t, text_emb):
        """``exp(logit_scale) * sum(text_emb * image_emb(x, t))``, the scalar CLIP guidance ascends."""
        return jnp.exp(self.logit_scale) * jnp.sum(text_emb * self.image_embeddings(x, t))

    def __call__(self, x, t, tokens, lens):
        return self.image_embeddings(x, t), self.text_embeddings(tokens, lens)


def _variables(params):
    """Accept either the bare parameter tree or a ``{"params": tree}`` collection dict."""
    if isinstance(params, dict) and set(params) == {"params"}:
        return params
    return {"params": params}


def image_embeddings(model: ClipModel, params, x, t):
    """Normalised image embeddings ``[B, n_embd]`` of ``x`` (NHWC, [-1,1]) at integer timesteps ``t``."""
    return model.apply(_variables(params), x, t, method=ClipModel.image_embeddings)


def text_embeddings(model: ClipModel, params, tokens, lens):
    """Normalised text embeddings ``[B, n_embd]`` of padded CLIP tokens and their lengths."""
    return model.apply(_variables(params), tokens, lens, method=ClipModel.text_embeddings)


def clip_guidance_grad(model: ClipModel, params, x, t, text_emb, grad_scale=1.0):
    """``grad_scale * d/dx [exp(logit_scale) * sum(text_emb * image_emb(x, t))]``, same shape as ``x``.

    ``text_emb`` are normalised text embeddings (from :func:`text_embeddings`),
    one row per image; only ``x`` is differentiated (the logit scale is fixed).
    """
    variables = _variables(params)

    def objective(x_):
        return model.apply(variables, x_, t, text_emb, method=ClipModel.guidance_objective)

    return jax.grad(objective)(jnp.asarray(x, jnp.float32)) * grad_scale
