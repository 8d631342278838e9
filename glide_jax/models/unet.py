"""The ADM U-Net with GLIDE's text conditioning, and its super-res / inpaint inputs.

``GlideUNet`` is one module for all four released variants; the variant is a
property of ``UNetConfig`` (``inpaint``, ``super_res``). The text encoder and the
U-Net torso are separate children so a sampler can encode the caption once
(``method=GlideUNet.encode_text``) and reuse it at every step (``text_emb=``).

Layout is NHWC. Submodule names follow the PyTorch module tree
(``input_blocks_3_1`` ↔ ``input_blocks.3.1``) so checkpoint conversion is a
mechanical rename (see ``glide_jax.hub.convert_unet``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax.config import UNetConfig
from glide_jax.errors import InputError
from glide_jax.models import layers as L
from glide_jax.models import partitioning as P
from glide_jax.models.text import TextEncoder

TextEmb = Tuple[jax.Array, jax.Array]  # (xf_proj [B, 4C], xf_out [B, ctx, width])


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding, optionally resampling by 2 (``up``/``down``)."""

    out_channels: int
    use_scale_shift_norm: bool
    dropout: float = 0.0
    up: bool = False
    down: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
        h = L.GroupNorm32(swish=True, name="in_layers_0")(x)
        if self.up:
            h, x = L.upsample_nearest(h), L.upsample_nearest(x)
        elif self.down:
            h, x = L.avg_pool2(h), L.avg_pool2(x)
        h = L.conv(self.out_channels, "in_layers_2", dtype=self.dtype)(h)
        emb_width = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        emb_out = L.dense(emb_width, "emb_layers_1", dtype=self.dtype)(nn.silu(emb))
        emb_out = emb_out.astype(h.dtype)[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = L.GroupNorm32(swish=False, name="out_layers_0")(h) * (1 + scale) + shift
            h = nn.silu(h)
        else:
            h = L.GroupNorm32(swish=True, name="out_layers_0")(h + emb_out)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = L.conv(self.out_channels, "out_layers_3", dtype=self.dtype, zero=True)(h)
        if x.shape[-1] != self.out_channels:
            x = L.conv(self.out_channels, "skip_connection", kernel=1, dtype=self.dtype)(x)
        return x + h


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values are prefixed with the projected text tokens."""

    heads: int
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, xf_out: Optional[jax.Array]) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = L.GroupNorm32(swish=False, name="norm")(x).reshape(b, hgt * wid, c)
        qkv = L.dense(3 * c, "qkv", (P.EMBED, P.HEADS), self.dtype)(h)
        q, k, v = L.split_heads_qkv(qkv, self.heads, 3)
        if xf_out is not None:
            ekv = L.dense(2 * c, "encoder_kv", (P.EMBED, P.HEADS), self.dtype)(xf_out.astype(self.dtype))
            ek, ev = L.split_heads_qkv(ekv, self.heads, 2)
            k = jnp.concatenate([ek, k], axis=1)
            v = jnp.concatenate([ev, v], axis=1)
        a = L.attention(q, k, v, implementation=self.attention)
        out = L.dense(c, "proj_out", (P.HEADS, P.EMBED), self.dtype, zero=True)(a)
        return x + out.reshape(b, hgt, wid, c).astype(x.dtype)


class Downsample(nn.Module):
    channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return L.conv(self.channels, "op", stride=2, dtype=self.dtype)(x)


class Upsample(nn.Module):
    channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return L.conv(self.channels, "conv", dtype=self.dtype)(L.upsample_nearest(x))


GUIDANCE_EMBED_SCALE = 100.0  # w is multiplied by this before its sinusoidal features (w ~ 1..10 -> 100..1000)


def guidance_embedding(w: jax.Array, channels: int, width: int) -> jax.Array:
    """``[B, width]``: sinusoidal features of the guidance weight through a two-layer MLP whose last layer
    starts at zero, so a student warm-started from a model without it computes that model's output.

    Called inside ``UNetTorso`` (its layers are named ``guidance_embed_0`` / ``guidance_embed_2`` there).
    """
    features = L.timestep_embedding(w.astype(jnp.float32) * GUIDANCE_EMBED_SCALE, channels)
    h = L.dense(width, "guidance_embed_0")(features)
    return L.dense(width, "guidance_embed_2", zero=True)(nn.silu(h))


class UNetTorso(nn.Module):
    """The U-Net proper: input conv, encoder, middle, decoder with skips, output head."""

    config: UNetConfig
    attention: str = "auto"  # attention implementation, one of layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, timesteps: jax.Array, text: Optional[TextEmb], train: bool = False,
                 guidance_weight: Optional[jax.Array] = None) -> jax.Array:
        cfg = self.config
        dtype = L.compute_dtype(cfg.dtype)
        mc = cfg.num_channels
        res_cls = nn.remat(ResBlock, static_argnums=(3,)) if cfg.remat else ResBlock

        def res(out_ch, name, up=False, down=False):
            return res_cls(out_ch, cfg.use_scale_shift_norm, cfg.dropout, up, down, dtype, name=name)

        def attn(ch, name, upsample):
            return AttentionBlock(cfg.heads_for(ch, upsample), dtype, self.attention, name=name)

        emb = L.dense(cfg.time_embed_dim, "time_embed_0")(L.timestep_embedding(timesteps, mc))
        emb = L.dense(cfg.time_embed_dim, "time_embed_2")(nn.silu(emb))
        if cfg.guidance_embed:
            emb = emb + guidance_embedding(guidance_weight, mc, cfg.time_embed_dim)
        xf_out = None
        if text is not None:
            xf_proj, xf_out = text
            emb = emb + xf_proj.astype(emb.dtype)

        h = x.astype(dtype)
        ch = int(cfg.channel_mult[0] * mc)
        h = L.conv(ch, "input_blocks_0_0", dtype=dtype)(h)
        skips, skip_channels = [h], [ch]
        ds, block = 1, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                ch = int(mult * mc)
                h = res(ch, f"input_blocks_{block}_0")(h, emb, train)
                if ds in cfg.attention_ds:
                    h = attn(ch, f"input_blocks_{block}_1", False)(h, xf_out)
                skips.append(h)
                skip_channels.append(ch)
                block += 1
            if level != len(cfg.channel_mult) - 1:
                name = f"input_blocks_{block}_0"
                h = res(ch, name, down=True)(h, emb, train) if cfg.resblock_updown else Downsample(ch, dtype, name=name)(h)
                skips.append(h)
                skip_channels.append(ch)
                ds *= 2
                block += 1

        h = res(ch, "middle_block_0")(h, emb, train)
        h = attn(ch, "middle_block_1", False)(h, xf_out)
        h = res(ch, "middle_block_2")(h, emb, train)

        block = 0
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                skip_channels.pop()
                ch = int(mc * mult)
                layer = 0
                h = res(ch, f"output_blocks_{block}_{layer}")(h, emb, train)
                if ds in cfg.attention_ds:
                    layer += 1
                    h = attn(ch, f"output_blocks_{block}_{layer}", True)(h, xf_out)
                if level and i == cfg.num_res_blocks:
                    layer += 1
                    name = f"output_blocks_{block}_{layer}"
                    h = res(ch, name, up=True)(h, emb, train) if cfg.resblock_updown else Upsample(ch, dtype, name=name)(h)
                    ds //= 2
                block += 1

        h = L.GroupNorm32(swish=True, name="out_0")(h)
        h = L.conv(cfg.out_channels, "out_2", dtype=dtype, zero=True)(h)
        return h.astype(jnp.float32)


def resize_bilinear(low_res: jax.Array, size: int) -> jax.Array:
    """Bilinear resize with half-pixel centres and edge clamping (PyTorch ``align_corners=False``)."""
    b, _, _, c = low_res.shape
    return jax.image.resize(low_res.astype(jnp.float32), (b, size, size, c), method="linear", antialias=False)


class GlideUNet(nn.Module):
    """Text-conditional GLIDE U-Net; inputs are NHWC in [-1, 1], output [B, H, W, 6] (eps | variance value).

    ``attention`` chooses how every attention layer is computed (:func:`glide_jax.models.layers.attention`);
    it changes no parameter, so the same weights run under any choice.
    """

    config: UNetConfig
    attention: str = "auto"  # one of layers.ATTENTION_IMPLEMENTATIONS

    def setup(self):
        cfg = self.config
        if cfg.text.width:
            self.text = TextEncoder(cfg.text, cfg.time_embed_dim, L.compute_dtype(cfg.dtype), self.attention)
        self.unet = UNetTorso(cfg, self.attention)

    def encode_text(self, tokens: jax.Array, mask: Optional[jax.Array]) -> TextEmb:
        """Run the text transformer once; its result can be passed to ``__call__`` as ``text_emb``."""
        if not self.config.text.width:
            raise InputError("this model has no text transformer (text width 0)")
        return self.text(tokens, mask)

    def __call__(
        self,
        x: jax.Array,
        timesteps: jax.Array,
        tokens: Optional[jax.Array] = None,
        mask: Optional[jax.Array] = None,
        *,
        text_emb: Optional[TextEmb] = None,
        low_res: Optional[jax.Array] = None,
        inpaint_image: Optional[jax.Array] = None,
        inpaint_mask: Optional[jax.Array] = None,
        guidance_weight: Optional[jax.Array] = None,
        train: bool = False,
    ) -> jax.Array:
        cfg = self.config
        size, c = cfg.image_size, cfg.in_channels
        if x.ndim != 4 or x.shape[1:] != (size, size, c):
            raise InputError(f"x must have shape [batch, {size}, {size}, {c}] (NHWC), got {tuple(x.shape)}")
        b = x.shape[0]
        if timesteps.shape != (b,):
            raise InputError(f"timesteps must have shape [{b}], got {tuple(timesteps.shape)}")
        parts = [x]
        if cfg.inpaint:
            if inpaint_image is None:
                inpaint_image = jnp.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = jnp.zeros(x.shape[:3] + (1,), x.dtype)
            if inpaint_image.shape != x.shape:
                raise InputError(f"inpaint_image must have shape {tuple(x.shape)}, got {tuple(inpaint_image.shape)}")
            if inpaint_mask.shape != x.shape[:3] + (1,):
                raise InputError(f"inpaint_mask must have shape {tuple(x.shape[:3]) + (1,)}, got {tuple(inpaint_mask.shape)}")
            parts += [inpaint_image * inpaint_mask, inpaint_mask.astype(x.dtype)]
        if cfg.super_res:
            if low_res is None:
                raise InputError("this is a super-resolution model: low_res is required")
            if low_res.ndim != 4 or low_res.shape[0] != b or low_res.shape[-1] != c:
                raise InputError(f"low_res must have shape [{b}, h, w, {c}] (NHWC), got {tuple(low_res.shape)}")
            parts.append(resize_bilinear(low_res, size).astype(x.dtype))
        h = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else x
        text = None
        if cfg.text.width:
            if text_emb is None:
                if tokens is None:
                    raise InputError("this model is text-conditional: pass tokens (and mask) or text_emb")
                text_emb = self.encode_text(tokens, mask)
            text = text_emb
        if cfg.guidance_embed:
            if guidance_weight is None:
                raise InputError("this model is conditioned on a guidance weight: pass guidance_weight [batch]")
            guidance_weight = jnp.broadcast_to(jnp.asarray(guidance_weight, jnp.float32), (b,))
        elif guidance_weight is not None:
            raise InputError("guidance_weight is for a model with unet.guidance_embed; this model has none")
        return self.unet(h, timesteps, text, train, guidance_weight)
