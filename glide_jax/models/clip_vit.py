"""The standard CLIP (OpenAI's ``clip-vit-*`` as Hugging Face lays it out) in Flax, for CLIP scores.

GLIDE's own CLIP (:mod:`glide_jax.models.clip`) is noise-aware and steers sampling; evaluating
samples calls for the public CLIP everyone reports scores with. Both are pre-LN transformers, so
the towers here are built from the same blocks (:class:`~glide_jax.models.clip.ClipBlock`), set
to the standard model's details:

* q, k and v projections all carry a bias; the MLP has ``intermediate_size`` units and the
  activation the config names (``quick_gelu`` for OpenAI's checkpoints, exact ``gelu`` in some
  newer ones); layer norms use the config's ``layer_norm_eps``;
* image tower: a bias-free patch convolution, a learned class token in front of the patches,
  learned position embeddings, a layer norm *before* the blocks (``pre_layrnorm``) and one on the
  class token after them (``post_layernorm``);
* text tower: token + position embeddings, causal attention, a final layer norm, and the output
  read at the end-of-text token: the first position holding ``eos_token_id``, or, for configs
  written before Hugging Face fixed that id (they say ``eos_token_id: 2``), the position of the
  largest id in the row, which is the end token of OpenAI's vocabulary;
* bias-free projections of both towers to ``projection_dim``, and the (log) ``logit_scale``.

Text rows may be padded with anything after their end token: attention is causal, so positions
after it cannot change the output, which is why no attention mask is taken. Inputs are NHWC
pixel values already preprocessed (see :mod:`glide_jax.evaluation.clip_inputs`) and int token
ids ``[B, L]`` with ``L <= max_position_embeddings``.

Parameter tree: ``vision_model``, ``text_model``, ``visual_projection``, ``text_projection``
(``kernel`` only) and ``logit_scale``; ``glide_jax.hub.convert_hf_clip`` maps it to and from
Hugging Face's state dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax.errors import InputError
from glide_jax.models.clip import ACTIVATIONS, ClipBlock, LayerNorm32
from glide_jax.models.partitioning import CTX, EMBED, KERNEL, MLP, PATCH, VOCAB, param_with_axes

LEGACY_EOS_TOKEN_ID = 2  # what configs written before the fix say; pooling then takes the largest id


@dataclasses.dataclass(frozen=True)
class ClipTowerConfig:
    """One transformer tower. Vision-only and text-only fields keep Hugging Face's defaults on the other tower."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # vision
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    # text
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    eos_token_id: int = 49407

    def __post_init__(self):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                     "patch_size", "num_channels", "vocab_size", "max_position_embeddings"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise InputError(f"CLIP config: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise InputError(f"CLIP config: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise InputError(f"CLIP config: hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.patch_size > self.image_size:
            raise InputError(f"CLIP config: patch_size {self.patch_size} is larger than image_size {self.image_size}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise InputError(f"CLIP config: layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


_TOWER_FIELDS = {f.name for f in dataclasses.fields(ClipTowerConfig)}
# Hugging Face's defaults for keys a config.json leaves out (it writes only values that differ from them).
HF_TEXT_DEFAULTS = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)


@dataclasses.dataclass(frozen=True)
class ClipVitConfig:
    """Both towers, the shared embedding width and the compute dtype ("float32" or "bfloat16")."""

    text: ClipTowerConfig
    vision: ClipTowerConfig
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    dtype: str = "float32"

    def __post_init__(self):
        if type(self.projection_dim) is not int or self.projection_dim <= 0:
            raise InputError(f"CLIP config: projection_dim must be a positive integer, got {self.projection_dim!r}")

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any], dtype: str = "float32") -> "ClipVitConfig":
        """The configuration a Hugging Face ``CLIPModel`` ``config.json`` describes.

        Keys the file leaves out take Hugging Face's defaults; keys this model does not use
        (dropout, initialisation, token ids other than the end token) are ignored.
        """
        if not isinstance(config, Mapping):
            raise InputError(f"a CLIP config must be a JSON object, got {type(config).__name__}")
        model_type = config.get("model_type", "clip")
        if model_type != "clip":
            raise InputError(f"config.json describes a {model_type!r} model, not a CLIP model (model_type 'clip')")

        def tower(key: str, defaults: Mapping[str, Any]) -> ClipTowerConfig:
            values = config.get(key) or config.get(key + "_dict") or {}
            if not isinstance(values, Mapping):
                raise InputError(f"CLIP config: {key} must be a JSON object")
            picked = {k: v for k, v in values.items() if k in _TOWER_FIELDS}
            return ClipTowerConfig(**{**defaults, **picked})

        return cls(text=tower("text_config", HF_TEXT_DEFAULTS), vision=tower("vision_config", HF_VISION_DEFAULTS),
                   projection_dim=config.get("projection_dim", 512),
                   logit_scale_init_value=float(config.get("logit_scale_init_value", 2.6592)), dtype=dtype)


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


def _blocks(tower: ClipTowerConfig, causal: bool, dtype, h):
    for i in range(tower.num_hidden_layers):
        h = ClipBlock(tower.hidden_size, tower.num_attention_heads, 2 * tower.num_hidden_layers, causal, dtype,
                      key_bias=True, activation=tower.hidden_act, hidden=tower.intermediate_size,
                      eps=tower.layer_norm_eps, name=f"block_{i}")(h)
    return h


class ClipVisionTower(nn.Module):
    """Pixel values NHWC ``[B, S, S, C]`` -> the layer-normed class token ``[B, hidden_size]``."""

    config: ClipTowerConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        cfg, width, p = self.config, self.config.hidden_size, self.config.patch_size
        want = (cfg.image_size, cfg.image_size, cfg.num_channels)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
            hint = " (it looks NCHW; this library is NHWC)" if pixels.ndim == 4 and pixels.shape[1] == want[2] else ""
            raise InputError(f"CLIP image tower expects pixel values of shape [B, {want[0]}, {want[1]}, {want[2]}], "
                             f"got {tuple(pixels.shape)}{hint}")
        patches = nn.Conv(width, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=self.dtype,
                          param_dtype=jnp.float32, name="patch_embedding",
                          kernel_init=param_with_axes(_normal(0.02), (KERNEL, KERNEL, PATCH, EMBED)))(pixels)
        patches = patches.reshape(pixels.shape[0], -1, width).astype(jnp.float32)
        class_token = self.param("class_embedding", param_with_axes(_normal(width ** -0.5), (EMBED,)),
                                 (width,), jnp.float32)
        positions = self.param("position_embedding", param_with_axes(_normal(0.02), (PATCH, EMBED)),
                               (cfg.num_patches + 1, width), jnp.float32)
        first = jnp.broadcast_to(class_token, (pixels.shape[0], 1, width))
        h = jnp.concatenate([first, patches], axis=1) + positions[None]
        h = LayerNorm32(cfg.layer_norm_eps, name="pre_layrnorm")(h)
        h = _blocks(cfg, False, self.dtype, h)
        return LayerNorm32(cfg.layer_norm_eps, name="post_layernorm")(h[:, 0])


def eos_positions(input_ids, eos_token_id: int):
    """Where each row's output is read: the first ``eos_token_id`` (row start if none), or for the
    legacy id 2 the largest id of the row (first such position)."""
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == eos_token_id, axis=-1)


class ClipTextTower(nn.Module):
    """Token ids ``[B, L]`` -> the final-layer-normed hidden state at the end token ``[B, hidden_size]``."""

    config: ClipTowerConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids):
        cfg, width = self.config, self.config.hidden_size
        if input_ids.ndim != 2 or not 1 <= input_ids.shape[1] <= cfg.max_position_embeddings:
            raise InputError(f"CLIP text tower expects token ids of shape [B, L] with 1 <= L <= "
                             f"{cfg.max_position_embeddings}, got {tuple(input_ids.shape)}")
        if not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise InputError(f"token ids must be integers, got dtype {input_ids.dtype}")
        tokens = self.param("token_embedding", param_with_axes(_normal(0.02), (VOCAB, EMBED)),
                            (cfg.vocab_size, width), jnp.float32)
        positions = self.param("position_embedding", param_with_axes(_normal(0.02), (CTX, EMBED)),
                               (cfg.max_position_embeddings, width), jnp.float32)
        ids = input_ids.astype(jnp.int32)
        h = jnp.take(tokens, ids, axis=0) + positions[None, : ids.shape[1]]
        h = _blocks(cfg, True, self.dtype, h)
        last = eos_positions(ids, cfg.eos_token_id)
        h = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
        return LayerNorm32(cfg.layer_norm_eps, name="final_layer_norm")(h)


class ClipVitModel(nn.Module):
    """Both towers and their projections: ``__call__(pixels, input_ids) -> (image_features, text_features)``.

    The features are the unnormalised projections (Hugging Face's ``get_image_features`` /
    ``get_text_features``), float32 ``[B, projection_dim]``.
    """

    config: ClipVitConfig

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.vision_model = ClipVisionTower(cfg.vision, dtype)
        self.text_model = ClipTextTower(cfg.text, dtype)

        def projection(width: int, name: str):
            return nn.Dense(cfg.projection_dim, use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
                            kernel_init=param_with_axes(_normal(width ** -0.5), (EMBED, MLP)))

        self.visual_projection = projection(cfg.vision.hidden_size, "visual_projection")
        self.text_projection = projection(cfg.text.hidden_size, "text_projection")
        self.logit_scale = self.param("logit_scale", param_with_axes(nn.initializers.constant(
            cfg.logit_scale_init_value), ()), (), jnp.float32)

    def image_features(self, pixels):
        return self.visual_projection(self.vision_model(jnp.asarray(pixels))).astype(jnp.float32)

    def text_features(self, input_ids):
        return self.text_projection(self.text_model(jnp.asarray(input_ids))).astype(jnp.float32)

    def __call__(self, pixels, input_ids):
        return self.image_features(pixels), self.text_features(input_ids)


def example_inputs(config: ClipVitConfig, batch: int = 1):
    """Zero pixel values and a one-token-plus-end row per example: what ``init`` needs."""
    v = config.vision
    pixels = jnp.zeros((batch, v.image_size, v.image_size, v.num_channels), jnp.float32)
    ids = jnp.full((batch, 2), config.text.eos_token_id, jnp.int32)
    return pixels, ids


def init_params(config: ClipVitConfig, key: jax.Array):
    """Fresh (boxed) parameters, without the ``{"params": ...}`` wrapper (initialised in one compiled call)."""
    return jax.jit(lambda k: ClipVitModel(config).init(k, *example_inputs(config))["params"])(key)


def abstract_params(config: ClipVitConfig):
    """``ShapeDtypeStruct`` tree of the parameters, nothing allocated."""
    init = lambda k: ClipVitModel(config).init(k, *example_inputs(config))["params"]  # noqa: E731
    return nn.unbox(jax.eval_shape(init, jax.random.key(0)))


def _variables(params):
    return params if isinstance(params, Mapping) and set(params) == {"params"} else {"params": params}


def image_features(model: ClipVitModel, params, pixels):
    """Unnormalised image embeddings ``[B, projection_dim]`` of preprocessed NHWC pixel values."""
    return model.apply(_variables(params), pixels, method=ClipVitModel.image_features)


def text_features(model: ClipVitModel, params, input_ids):
    """Unnormalised text embeddings ``[B, projection_dim]`` of token id rows (each holding its end token)."""
    return model.apply(_variables(params), input_ids, method=ClipVitModel.text_features)


def cosine_scores(image_embeds, text_embeds):
    """``100 * cos(image, text)`` per row, the CLIP score of each pair (unclamped), float32 ``[B]``."""
    a = jnp.asarray(image_embeds, jnp.float32)
    b = jnp.asarray(text_embeds, jnp.float32)
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    return 100.0 * jnp.sum(a * b, axis=-1)


__all__ = ["ClipTowerConfig", "ClipVitConfig", "ClipVitModel", "ClipVisionTower", "ClipTextTower", "abstract_params",
           "cosine_scores", "eos_positions", "example_inputs", "image_features", "init_params", "text_features",
           "LEGACY_EOS_TOKEN_ID"]
