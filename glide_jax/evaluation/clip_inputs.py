"""CLIP's image preprocessing as Hugging Face's ``CLIPImageProcessor`` does it, to the bit.

Steps, each optional as ``preprocessor_config.json`` says:

1. convert to RGB (PIL images; arrays must already be ``[H, W, 3]`` uint8);
2. resize so the shorter side is ``shortest_edge`` (224), the longer one
   ``int(shortest_edge * long / short)`` (truncated, not rounded), with PIL's filter ``resample``
   (3, bicubic) applied to the uint8 image, so the result is rounded back to uint8 by PIL;
   a ``{"height", "width"}`` size resizes to exactly that;
3. centre crop: top ``(h - crop_h) // 2``, left ``(w - crop_w) // 2``; an image smaller than
   the crop is first zero-padded, ``ceil`` of half the missing rows/columns before it;
4. rescale: ``uint8 -> float64 * rescale_factor -> float32``;
5. normalise in float32: ``(x - mean) / std`` per channel.

The output is NHWC float32 (the library's layout); Hugging Face returns the same values NCHW.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from glide_jax.errors import InputError

PREPROCESSOR_FILE = "preprocessor_config.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the value configs store
MAX_CONFIG_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class ClipImageConfig:
    """What ``preprocessor_config.json`` sets; the defaults are ``CLIPImageProcessor``'s."""

    do_resize: bool = True
    shortest_edge: Optional[int] = 224  # None with ``resize_to`` set
    resize_to: Optional[Tuple[int, int]] = None  # exact (height, width) instead of a shortest edge
    resample: int = BICUBIC
    do_center_crop: bool = True
    crop_size: Tuple[int, int] = (224, 224)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: Tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: Tuple[float, float, float] = OPENAI_CLIP_STD
    do_convert_rgb: bool = True

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "ClipImageConfig":
        """Read a preprocessor config; sizes may be ints (older files) or dicts, as Hugging Face accepts."""
        fields = {}
        for name in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
            if name in config:
                fields[name] = bool(config[name])
        if "resample" in config:
            fields["resample"] = int(config["resample"])
        if "rescale_factor" in config:
            fields["rescale_factor"] = float(config["rescale_factor"])
        for name in ("image_mean", "image_std"):
            if name in config:
                value = config[name]
                values = [value] * 3 if isinstance(value, (int, float)) else list(value)
                if len(values) != 3:
                    raise InputError(f"{name} must have 3 values (RGB), got {value!r}")
                fields[name] = tuple(float(v) for v in values)
        if "size" in config:
            size = config["size"]
            if isinstance(size, int):
                fields["shortest_edge"] = size
            elif isinstance(size, Mapping) and set(size) == {"shortest_edge"}:
                fields["shortest_edge"] = int(size["shortest_edge"])
            elif isinstance(size, Mapping) and set(size) == {"height", "width"}:
                fields["shortest_edge"], fields["resize_to"] = None, (int(size["height"]), int(size["width"]))
            else:
                raise InputError(f"unsupported size {size!r}: expected an int, {{'shortest_edge'}} or "
                                 "{'height', 'width'}")
        if "crop_size" in config:
            crop = config["crop_size"]
            if isinstance(crop, int):
                fields["crop_size"] = (crop, crop)
            elif isinstance(crop, Mapping) and set(crop) == {"height", "width"}:
                fields["crop_size"] = (int(crop["height"]), int(crop["width"]))
            else:
                raise InputError(f"unsupported crop_size {crop!r}: expected an int or {{'height', 'width'}}")
        out = cls(**fields)
        if min(out.crop_size) <= 0 or (out.shortest_edge is not None and out.shortest_edge <= 0):
            raise InputError(f"sizes must be positive, got size {config.get('size')!r}, crop {out.crop_size}")
        if min(abs(s) for s in out.image_std) == 0:
            raise InputError("image_std must not contain zeros")
        return out

    @classmethod
    def from_directory(cls, directory) -> "ClipImageConfig":
        """The config in ``directory/preprocessor_config.json``."""
        path = Path(directory) / PREPROCESSOR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: a Hugging Face CLIP directory needs it")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: too large for a preprocessor config")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{path}: {e}") from None

    @property
    def output_size(self) -> Tuple[int, int]:
        """(height, width) of the preprocessed images (the crop, or else the resize target)."""
        if self.do_center_crop:
            return self.crop_size
        if self.do_resize and self.resize_to is not None:
            return self.resize_to
        raise InputError("without a centre crop or an exact resize, images keep their own sizes")


def resize_target(height: int, width: int, config: ClipImageConfig) -> Tuple[int, int]:
    """(height, width) the resize produces: Hugging Face's shortest-edge rule, the long side truncated."""
    if config.resize_to is not None:
        return config.resize_to
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = config.shortest_edge, int(config.shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def centre_crop(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``image[H, W, C]`` cropped to ``size`` about its centre, zero-padded first where it is smaller."""
    crop_h, crop_w = size
    h, w = image.shape[:2]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return image[top: top + crop_h, left: left + crop_w]
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    pad_top, pad_left = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded = np.zeros((new_h, new_w) + image.shape[2:], image.dtype)
    padded[pad_top: pad_top + h, pad_left: pad_left + w] = image
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top): min(new_h, top + crop_h), max(0, left): min(new_w, left + crop_w)]


def as_rgb_uint8(image, convert_rgb: bool = True) -> np.ndarray:
    """A PIL image (converted to RGB) or an ``[H, W, 3]`` uint8 array, as a uint8 array."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB") if convert_rgb and image.mode != "RGB" else image
        image = np.asarray(image)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        hint = " (it looks CHW; pass HWC)" if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3 else ""
        raise InputError(f"CLIP preprocessing takes [H, W, 3] uint8 images or PIL images, got shape "
                         f"{image.shape} dtype {image.dtype}{hint}")
    return image


def preprocess_image(image, config: ClipImageConfig = ClipImageConfig()) -> np.ndarray:
    """One image (PIL or ``[H, W, 3]`` uint8) -> CLIP pixel values ``[h, w, 3]`` float32."""
    pixels = as_rgb_uint8(image, config.do_convert_rgb)
    if config.do_resize:
        height, width = resize_target(pixels.shape[0], pixels.shape[1], config)
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), resample=config.resample))
    if config.do_center_crop:
        pixels = centre_crop(pixels, config.crop_size)
    out = pixels
    if config.do_rescale:
        out = (out.astype(np.float64) * config.rescale_factor).astype(np.float32)
    if config.do_normalize:
        out = out.astype(np.float32) if out.dtype != np.float32 else out
        out = (out - np.asarray(config.image_mean, np.float32)) / np.asarray(config.image_std, np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def preprocess_images(images: Sequence, config: ClipImageConfig = ClipImageConfig()) -> np.ndarray:
    """A list of images of any sizes -> pixel values ``[N, h, w, 3]`` float32 (NHWC)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise InputError("preprocess_images takes a list (or [N, H, W, 3] array) of images, not a single image")
    return np.stack([preprocess_image(image, config) for image in images]) if len(images) else np.zeros(
        (0,) + tuple(config.output_size) + (3,), np.float32)
