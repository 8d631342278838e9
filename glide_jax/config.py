"""Frozen configuration dataclasses and the named presets.

Every network is built from one of these dataclasses, never from long argument
lists. The released OpenAI checkpoints are reproduced by the presets ``base``,
``upsample``, ``base-inpaint``, ``upsample-inpaint`` and ``clip``; the
``tiny-*`` presets exist for tests and CPU experiments. ``UNetConfig.from_reference``
and ``ClipConfig.from_reference`` accept the option dictionaries of the PyTorch
reference (``create_model`` kwargs, the CLIP ``config.yaml``) so that any
configuration the reference can build can be built here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import typing
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from glide_jax.config_checks import check_counts, check_fraction
from glide_jax.errors import InputError

GLIDE_VOCAB = 50257  # GPT-2 BPE vocabulary used by the GLIDE text transformer.

_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def _as_int_tuple(value: Union[str, int, Tuple[int, ...], list], what: str) -> Tuple[int, ...]:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return ()
        try:
            return tuple(int(v) for v in value.split(","))
        except ValueError as e:
            raise InputError(f"{what}: cannot parse {value!r} as comma-separated integers") from e
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class TextConfig:
    """GLIDE's text transformer. ``width == 0`` means an unconditional U-Net."""

    text_ctx: int = 128  # tokens per caption (the transformer's context)
    width: int = 512  # transformer width; 0: no text transformer (unconditional U-Net)
    layers: int = 16  # transformer blocks
    heads: int = 8  # attention heads per block
    final_ln: bool = True  # layer norm after the last block
    padding: bool = True  # learned embedding for padding positions (masked tokens)
    n_vocab: int = GLIDE_VOCAB  # token ids the embedding holds

    def __post_init__(self):
        check_counts("text", text_ctx=self.text_ctx, n_vocab=self.n_vocab, heads=self.heads)
        check_counts("text", 0, width=self.width, layers=self.layers)
        if self.width and self.width % max(self.heads, 1):
            raise InputError(f"text width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class UNetConfig:
    """ADM U-Net with GLIDE text conditioning (and its super-res/inpaint inputs).

    ``attention_resolutions`` are feature-map resolutions (as in the reference's
    option string); attention is used where ``image_size // ds`` is listed.
    """

    image_size: int = 64  # side of the (square) images it denoises
    num_channels: int = 192  # channels of the first level; level i has channel_mult[i] times as many
    num_res_blocks: int = 3  # residual blocks per level on the way down (one more on the way up)
    channel_mult: Tuple[int, ...] = (1, 2, 3, 4)  # width multiplier of each resolution level
    attention_resolutions: Tuple[int, ...] = (32, 16, 8)  # feature-map sides that get attention blocks
    num_heads: int = 1  # attention heads, when num_head_channels is -1
    num_head_channels: int = 64  # channels per attention head (-1: use num_heads)
    num_heads_upsample: int = -1  # heads of the upsampling path's attention (-1: num_heads)
    use_scale_shift_norm: bool = True  # the embedding scales and shifts the normalised activations
    resblock_updown: bool = True  # resample with residual blocks (else plain convolutions)
    dropout: float = 0.0  # dropout inside residual blocks, in training only
    in_channels: int = 3  # channels of the image being denoised
    out_channels: int = 6  # output channels: the noise prediction and the variance interpolation value
    inpaint: bool = False  # also reads the masked image and the mask (four more input channels)
    super_res: bool = False  # also reads a low-resolution image, upsampled (three more input channels)
    text: TextConfig = field(default_factory=TextConfig)  # the caption encoder
    dtype: str = "float32"  # compute dtype; params always stay float32
    remat: bool = False  # rematerialise residual blocks (saves activation memory in training)
    guidance_embed: bool = False  # also reads a guidance weight w [B] (a guidance-distilled student, Meng et al.)

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InputError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        check_counts("unet", image_size=self.image_size, num_channels=self.num_channels,
                     num_res_blocks=self.num_res_blocks, num_heads=self.num_heads, in_channels=self.in_channels,
                     out_channels=self.out_channels)
        check_counts("unet", unset=-1, num_head_channels=self.num_head_channels,
                     num_heads_upsample=self.num_heads_upsample)
        if not self.channel_mult:
            raise InputError("channel_mult is empty")
        check_counts("unet", **{f"channel_mult[{i}]": m for i, m in enumerate(self.channel_mult)})
        if isinstance(self.dropout, bool) or not 0.0 <= self.dropout < 1.0:
            raise InputError(f"unet.dropout must be in [0, 1), got {self.dropout!r}")
        for r in self.attention_resolutions:
            if r <= 0 or self.image_size % r:
                raise InputError(f"attention resolution {r} does not divide image_size {self.image_size}")
        if self.num_res_blocks < 1:
            raise InputError("num_res_blocks must be >= 1")

    @property
    def attention_ds(self) -> Tuple[int, ...]:
        return tuple(self.image_size // r for r in self.attention_resolutions)

    @property
    def model_in_channels(self) -> int:
        """Channels of the first convolution: x plus the conditioning channels."""
        c = self.in_channels
        if self.inpaint:
            c += self.in_channels + 1
        if self.super_res:
            c += self.in_channels
        return c

    @property
    def time_embed_dim(self) -> int:
        return self.num_channels * 4

    def heads_for(self, channels: int, upsample: bool) -> int:
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise InputError(
                    f"attention channels {channels} not divisible by num_head_channels {self.num_head_channels}"
                )
            return channels // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    @classmethod
    def from_reference(cls, kwargs: Mapping[str, Any], **overrides) -> "UNetConfig":
        """Build from ``glide_text2im.model_creation.create_model`` keyword arguments."""
        kw = dict(kwargs)
        image_size = int(kw["image_size"])
        mult = kw.get("channel_mult", "")
        if mult == "" or mult == () or mult is None:
            if image_size not in _DEFAULT_CHANNEL_MULT:
                raise InputError(f"unsupported image size without channel_mult: {image_size}")
            mult = _DEFAULT_CHANNEL_MULT[image_size]
        else:
            mult = _as_int_tuple(mult, "channel_mult")
            if 2 ** (len(mult) + 2) != image_size:
                raise InputError(f"channel_mult {mult} does not fit image_size {image_size} (2**(len+2) must equal it)")
        text = TextConfig(
            text_ctx=int(kw.get("text_ctx", 128)),
            width=int(kw.get("xf_width", 512)),
            layers=int(kw.get("xf_layers", 16)),
            heads=int(kw.get("xf_heads", 8)),
            final_ln=bool(kw.get("xf_final_ln", True)),
            padding=bool(kw.get("xf_padding", True)),
        )
        cfg = cls(
            image_size=image_size,
            num_channels=int(kw["num_channels"]),
            num_res_blocks=int(kw["num_res_blocks"]),
            channel_mult=mult,
            attention_resolutions=_as_int_tuple(kw.get("attention_resolutions", "32,16,8"), "attention_resolutions"),
            num_heads=int(kw.get("num_heads", 1)),
            num_head_channels=int(kw.get("num_head_channels", -1)),
            num_heads_upsample=int(kw.get("num_heads_upsample", -1)),
            use_scale_shift_norm=bool(kw.get("use_scale_shift_norm", True)),
            resblock_updown=bool(kw.get("resblock_updown", True)),
            dropout=float(kw.get("dropout", 0.0)),
            inpaint=bool(kw.get("inpaint", False)),
            super_res=bool(kw.get("super_res", False)),
            text=text,
        )
        return dataclasses.replace(cfg, **overrides) if overrides else cfg


@dataclass(frozen=True)
class DiffusionConfig:
    """The Gaussian diffusion a model was trained with."""

    steps: int = 1000  # diffusion timesteps T
    noise_schedule: str = "squaredcos_cap_v2"  # beta schedule: "squaredcos_cap_v2" (cosine) or "linear"

    def __post_init__(self):
        check_counts("diffusion", steps=self.steps)


@dataclass(frozen=True)
class ModelConfig:
    """A GLIDE diffusion model: its U-Net, its diffusion and, for the upsampler, its input size."""

    unet: UNetConfig  # the network
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # the noise process it was trained for
    low_res_size: Optional[int] = None  # super-res models: size of the conditioning image

    def __post_init__(self):
        if self.low_res_size is not None:
            check_counts("model", low_res_size=self.low_res_size)

    @property
    def kind(self) -> str:
        u = self.unet
        return {(False, False): "base", (True, False): "inpaint", (False, True): "upsample", (True, True): "upsample-inpaint"}[
            (u.inpaint, u.super_res)
        ]


@dataclass(frozen=True)
class ClipConfig:
    """GLIDE's noise-aware CLIP (ViT image encoder that also sees t, and a causal text encoder)."""

    image_size: int = 64  # side of the (noised) images it embeds
    patch_size: int = 4  # side of the ViT's image patches
    n_vocab: int = 65536  # token ids the text embedding holds
    max_text_len: int = 77  # tokens per caption
    n_embd: int = 512  # width of the shared image-text embedding
    n_head_state_text: int = 64  # channels per attention head, text tower
    n_head_text: int = 8  # attention heads, text tower (width = heads * channels per head)
    n_xf_blocks_text: int = 12  # transformer blocks, text tower
    n_head_state_image: int = 64  # channels per attention head, image tower
    n_head_image: int = 12  # attention heads, image tower
    n_xf_blocks_image: int = 12  # transformer blocks, image tower
    logit_scale: float = 100.0  # initial temperature of the contrastive logits (stored as its log)
    beta_schedule: str = "squaredcos_cap_v2"  # noise schedule of the timesteps it is conditioned on
    n_timesteps: int = 1000  # timesteps of that schedule
    dtype: str = "float32"  # compute dtype; params always stay float32

    def __post_init__(self):
        check_counts("clip", **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                if f.type in ("int", int)})
        if self.image_size % self.patch_size:
            raise InputError(f"CLIP image_size {self.image_size} not divisible by patch_size {self.patch_size}")

    @classmethod
    def from_reference(cls, config: Mapping[str, Any], **overrides) -> "ClipConfig":
        """Build from the reference's CLIP ``config.yaml`` dictionary."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - names
        if unknown:
            raise InputError(f"unknown CLIP config keys: {sorted(unknown)}")
        cfg = cls(**{k: v for k, v in config.items()})
        return dataclasses.replace(cfg, **overrides) if overrides else cfg


_BASE_TEXT = TextConfig(text_ctx=128, width=512, layers=16, heads=8, final_ln=True, padding=True)
_BASE_UNET = UNetConfig(
    image_size=64,
    num_channels=192,
    num_res_blocks=3,
    channel_mult=(1, 2, 3, 4),
    attention_resolutions=(32, 16, 8),
    num_head_channels=64,
    text=_BASE_TEXT,
)
_UP_UNET = dataclasses.replace(
    _BASE_UNET, image_size=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4), super_res=True
)
_TINY_TEXT = TextConfig(text_ctx=16, width=32, layers=2, heads=4)
_TINY_UNET = UNetConfig(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2, 2),
    attention_resolutions=(16, 8),
    num_head_channels=16,
    text=_TINY_TEXT,
)
_TINY_UP_UNET = dataclasses.replace(
    _TINY_UNET, image_size=64, channel_mult=(1, 1, 2, 2), super_res=True, text=TextConfig(16, 16, 2, 2)
)
_LINEAR = DiffusionConfig(steps=1000, noise_schedule="linear")

PRESETS = {
    "base": ModelConfig(_BASE_UNET),
    "base-inpaint": ModelConfig(dataclasses.replace(_BASE_UNET, inpaint=True)),
    "upsample": ModelConfig(_UP_UNET, _LINEAR, low_res_size=64),
    "upsample-inpaint": ModelConfig(dataclasses.replace(_UP_UNET, inpaint=True), _LINEAR, low_res_size=64),
    "clip": ClipConfig(),
    "tiny-base": ModelConfig(_TINY_UNET),
    "tiny-inpaint": ModelConfig(dataclasses.replace(_TINY_UNET, inpaint=True)),
    "tiny-upsample": ModelConfig(_TINY_UP_UNET, _LINEAR, low_res_size=16),
    "tiny-upsample-inpaint": ModelConfig(dataclasses.replace(_TINY_UP_UNET, inpaint=True), _LINEAR, low_res_size=16),
    "tiny-clip": ClipConfig(
        image_size=32, patch_size=4, n_vocab=49408, n_embd=32, n_head_state_text=16, n_head_text=2,
        n_xf_blocks_text=2, n_head_state_image=16, n_head_image=2, n_xf_blocks_image=2,
    ),
}


class UnknownPresetError(KeyError, InputError):
    """A preset name that is not in ``PRESETS`` (a ``ValueError`` too: it is bad input, not a missing key)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get_preset(name: str) -> Union[ModelConfig, ClipConfig]:
    """Return the named preset, or raise an :class:`UnknownPresetError` that lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


# ----------------------------------------------------------------------------- JSON

TYPE_KEY = "__type__"
_MODEL_TYPES = {cls.__name__: cls for cls in (TextConfig, UNetConfig, DiffusionConfig, ModelConfig, ClipConfig)}


_FAMILY_TYPES: Dict[str, type] = {}  # the configs of registered model families, by class name


def register_config_types(*types: type) -> None:
    """Let tagged JSON name these config classes wherever a model config may stand (a model family's
    config, registered with its family by ``glide_jax.family.register_family``)."""
    for cls in types:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a config dataclass")
        known = _MODEL_TYPES.get(cls.__name__)
        if known is not None and known is not cls:
            raise InputError(f"another config class is already named {cls.__name__}")
        _MODEL_TYPES[cls.__name__] = _FAMILY_TYPES[cls.__name__] = cls
# Keys that saved JSON (embedded models, model directories, training workdirs) may hold without a
# field of that name here, each with the one value it may have: the value that means "off".
RETIRED_FIELDS: Mapping[str, Mapping[str, Any]] = {
    "UNetConfig": {"coord_channels": False},
    "DataConfig": {"placement_fraction": 0.0},
}
# Fields that moved into a section of their class: old name -> "section.field". Saved JSON that still
# holds the old name loads into the new place, and ``--set`` (train.experiment.apply_overrides) takes
# the old name too.
MOVED_FIELDS: Mapping[str, Mapping[str, str]] = {
    "DataConfig": {name: f"shapes.{name}" for name in ("num_examples", "two_object_fraction", "pair_layout",
                                                        "relations")},
}


def config_to_dict(cfg, tagged: bool = True) -> dict:
    """A JSON-ready dict of any config dataclass; tuples become lists.

    The top level carries its class name (``__type__``), and so does every nested
    config whose field may hold more than one class (``ExperimentConfig.model``);
    a field declared as one config class needs no tag: :func:`config_from_dict`
    reads the declaration.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"not a config dataclass instance: {cfg!r}")
    out = {TYPE_KEY: type(cfg).__name__} if tagged else {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        out[f.name] = _to_json(getattr(cfg, f.name), hints[f.name])
    return out


def _to_json(value, annotation):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value, tagged=annotation is not type(value))
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def config_from_dict(d: Mapping[str, Any], cls: Optional[type] = None):
    """Rebuild a config written by :func:`config_to_dict`.

    ``cls`` is the expected dataclass; without it, ``d`` must be tagged with one of the model
    config types. Below the top, an untagged dict is read as the class its field declares (so
    hand-written or partly tagged JSON loads too); a tag is needed only where a field may hold
    several classes (``ExperimentConfig.model``). Unknown fields and tags that do not fit are
    errors, never silently dropped.
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"a config must be read from a JSON object, got {type(d).__name__}")
    candidates = (cls,) if cls is not None else tuple(_MODEL_TYPES.values())
    return _from_json(dict(d), candidates, cls.__name__ if cls is not None else "config")


def _from_json(d: Dict[str, Any], candidates: Tuple[type, ...], where: str):
    tag = d.pop(TYPE_KEY, None)
    by_name = {c.__name__: c for c in candidates}
    if tag is None and len(candidates) == 1:
        cls = candidates[0]
    elif tag in by_name:
        cls = by_name[tag]
    else:
        raise InputError(f"{where}: {TYPE_KEY} is {tag!r}, expected one of {sorted(by_name)}")
    _move_fields(d, cls.__name__)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    retired = RETIRED_FIELDS.get(cls.__name__, {})
    kwargs = {}
    for key, value in d.items():
        if key in names:
            kwargs[key] = _value_from_json(value, hints[key], f"{cls.__name__}.{key}")
        elif key in retired:
            if value != retired[key]:
                raise InputError(f"{cls.__name__}.{key}={value!r} is not supported; this version only reads "
                                 f"{key}={retired[key]!r} (and then ignores it)")
        else:
            raise InputError(f"{cls.__name__}: unknown config fields {sorted(set(d) - names - set(retired))}")
    return cls(**kwargs)


def _move_fields(d: Dict[str, Any], class_name: str) -> None:
    """Put fields saved under an old name (``MOVED_FIELDS``) into their section of ``d``, in place."""
    for old, new in MOVED_FIELDS.get(class_name, {}).items():
        if old not in d:
            continue
        section, name = new.split(".")
        if section in d and not isinstance(d[section], Mapping):
            raise InputError(f"{class_name}.{section}: expected a JSON object, got {type(d[section]).__name__}")
        d[section] = target = dict(d.get(section) or {})  # a copy: the caller's dict stays as it was
        if name in target:
            raise InputError(f"{class_name}: {old} (its old place) and {new} are both given")
        target[name] = d.pop(old)


def _dataclass_types(annotation) -> Tuple[type, ...]:
    """The config dataclasses an annotation allows (``X``, ``Union[X, Y]``, ``Optional[X]``)."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) is Union else (annotation,)
    return tuple(t for t in options if dataclasses.is_dataclass(t))


def _value_from_json(value, annotation, where: str):
    types = _dataclass_types(annotation)
    if isinstance(value, Mapping) and value.get(TYPE_KEY) in _FAMILY_TYPES and set(types) & set(_FAMILY_TYPES.values()):
        types = tuple(dict.fromkeys(types + (_FAMILY_TYPES[value[TYPE_KEY]],)))  # any registered family's config
    if isinstance(value, Mapping):
        if not types:
            raise InputError(f"{where}: a JSON object where the field holds {annotation}")
        return _from_json(dict(value), types, where)
    if types and not (value is None and type(None) in typing.get_args(annotation)):
        raise InputError(f"{where}: expected a JSON object ({' or '.join(t.__name__ for t in types)}), "
                         f"got {type(value).__name__}")
    if isinstance(value, list):
        return tuple(value)
    return value
