"""Building blocks shared by the U-Net and the text transformer.

Every parameter is created through ``param_with_axes`` so it carries logical
axis names; parameters are float32 while the computation runs in the module's
``dtype``. Normalisations and softmax always run in float32, as the PyTorch
reference does, which keeps bfloat16 compute numerically safe.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax.errors import InputError
from glide_jax.models import partitioning as P

Dtype = jnp.dtype


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")  # names a config's compute ``dtype`` may take


def compute_dtype(name: str):
    """The jnp dtype a config's ``dtype`` name stands for."""
    if name not in COMPUTE_DTYPES:
        raise InputError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]`` (cosine half first), float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def dense(features: int, name: str, axes: Sequence[str] = (P.EMBED, P.MLP), dtype=jnp.float32, zero: bool = False,
          use_bias: bool = True) -> nn.Dense:
    kernel_init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Dense(
        features,
        name=name,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_bias=use_bias,
        kernel_init=P.param_with_axes(kernel_init, axes),
        bias_init=P.param_with_axes(nn.initializers.zeros, (axes[-1],)),
    )


def conv(features: int, name: str, kernel: int = 3, stride: int = 1, dtype=jnp.float32, zero: bool = False) -> nn.Conv:
    """A 2-D convolution with PyTorch's symmetric padding (``kernel // 2`` on every side)."""
    pad = kernel // 2
    kernel_init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        name=name,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=P.param_with_axes(kernel_init, (P.KERNEL, P.KERNEL, P.EMBED, P.MLP)),
        bias_init=P.param_with_axes(nn.initializers.zeros, (P.MLP,)),
    )


class GroupNorm32(nn.Module):
    """GroupNorm with 32 groups computed in float32, optionally followed by SiLU."""

    swish: bool = False
    groups: int = 32
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if c % self.groups:
            raise InputError(f"GroupNorm32 needs channels divisible by {self.groups}, got {c}")
        scale = self.param("scale", P.param_with_axes(nn.initializers.ones, (P.NORM,)), (c,), jnp.float32)
        bias = self.param("bias", P.param_with_axes(nn.initializers.zeros, (P.NORM,)), (c,), jnp.float32)
        h = x.astype(jnp.float32)
        grouped = h.reshape(h.shape[:-1] + (self.groups, c // self.groups))
        axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        mean = grouped.mean(axis=axes, keepdims=True)
        var = jnp.square(grouped - mean).mean(axis=axes, keepdims=True)
        grouped = (grouped - mean) * jax.lax.rsqrt(var + self.eps)
        h = grouped.reshape(h.shape) * scale + bias
        if self.swish:
            h = nn.silu(h)
        return h.astype(x.dtype)


def layer_norm(name: str, eps: float = 1e-5) -> nn.LayerNorm:
    """LayerNorm in float32 with logically named parameters."""
    return nn.LayerNorm(
        epsilon=eps,
        name=name,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        scale_init=P.param_with_axes(nn.initializers.ones, (P.NORM,)),
        bias_init=P.param_with_axes(nn.initializers.zeros, (P.NORM,)),
    )


def split_heads_qkv(qkv: jax.Array, heads: int, parts: int):
    """Split a fused projection laid out per head as ``[part0, part1, ...]``.

    GLIDE's fused projections are head-major: the features of head ``h`` are the
    contiguous slice ``[h*parts*d, (h+1)*parts*d)``, itself split into ``parts``
    pieces of width ``d``. Returns ``parts`` arrays of shape ``[B, T, heads, d]``.
    """
    b, t, width = qkv.shape
    d = width // (heads * parts)
    qkv = qkv.reshape(b, t, heads, parts * d)
    return jnp.split(qkv, parts, axis=-1)


QUERY_CHUNK = 512

# How attention is computed: "einsum" (two einsums and a float32 softmax, written out here), "xla"
# (jax.nn.dot_product_attention's XLA path), "cudnn" (its fused cuDNN kernel; GPU with 16-bit compute only)
# and "auto" (cuDNN where it applies, else AUTO_DEFAULT).
ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
# "auto" off GPUs: on a 2-core CPU the einsum path took the base's 32x32 attention (batch 2, in query
# chunks) in about 190 ms against 285 ms for the XLA path, and was no slower on the smaller shapes
# (``python -m tools.benchmark_sample --attention-shapes``).
AUTO_DEFAULT = "einsum"


def attention_implementation(requested: str, dtype) -> str:
    """The implementation ``requested`` stands for with inputs of ``dtype`` on the default backend.

    cuDNN's fused kernel takes only 16-bit inputs and exists only on GPUs; "auto" picks it there
    and :data:`AUTO_DEFAULT` (the fastest on CPU) elsewhere.
    """
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise InputError(f"attention implementation must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, "
                         f"got {requested!r}")
    if requested != "auto":
        return requested
    sixteen_bit = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if sixteen_bit and jax.default_backend() == "gpu" else AUTO_DEFAULT


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: Optional[jax.Array] = None,
              implementation: str = "auto") -> jax.Array:
    """Multi-head attention ``softmax(q k^T / sqrt(d) + bias) v`` with a float32 softmax.

    q: [B, T, H, d]; k, v: [B, S, H, d]; bias broadcastable to [B, H, T, S]. Returns [B, T, H*d].
    ``implementation`` is one of :data:`ATTENTION_IMPLEMENTATIONS`. On the einsum and XLA paths, long
    query sequences (the 32x32 attention of the full-size models: T=1024) are processed
    ``QUERY_CHUNK`` queries at a time: the [B, H, T, S] logits then stay a few megabytes, which on
    CPU took that layer from about 52 to 36 ms at batch 2 with identical results. cuDNN's fused
    kernel never holds the whole logits, so it gets the sequence in one piece.
    """
    implementation = attention_implementation(implementation, q.dtype)
    t = q.shape[1]
    chunked = t > QUERY_CHUNK and t % QUERY_CHUNK == 0 and (bias is None or bias.shape[-2] == 1)
    if implementation != "cudnn" and chunked:
        n = t // QUERY_CHUNK
        chunks = q.reshape((q.shape[0], n, QUERY_CHUNK) + q.shape[2:]).swapaxes(0, 1)
        out = jax.lax.map(lambda qc: _attention(qc, k, v, bias, implementation), chunks)
        return out.swapaxes(0, 1).reshape(q.shape[:2] + (-1,))
    return _attention(q, k, v, bias, implementation)


def _attention(q, k, v, bias, implementation: str = "einsum"):
    if implementation == "einsum":
        out = _einsum_attention(q, k, v, bias)
    else:
        out = jax.nn.dot_product_attention(q, k, v, bias, implementation=implementation)
    return out.reshape(out.shape[:2] + (-1,))


def _einsum_attention(q, k, v, bias):
    """q and k are each scaled by ``d**-0.25`` before their product, as the PyTorch reference does."""
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(math.sqrt(d))
    logits = jnp.einsum("bthd,bshd->bhts", q * scale, k * scale)
    logits = logits.astype(jnp.float32)
    if bias is not None:
        logits = logits + bias
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def upsample_nearest(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
