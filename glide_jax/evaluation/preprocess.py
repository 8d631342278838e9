"""From uint8 images to the Inception's input: resized to 299x299 and scaled to [-1, 1], two ways.

The resize changes FID by more than many of the differences FID is used to
measure, so each way is reproduced exactly, and selected by name:

``"pytorch-fid"`` (the default)
    pytorch-fid's: pixels divided by 255, then ``F.interpolate(size=(299, 299),
    mode="bilinear", align_corners=False)`` without antialiasing, on the device.
    Bilinear interpolation is separable, so it is two small matrix products, each
    row of a matrix holding torch's two weights at torch's two source pixels
    (:func:`bilinear_matrix`, computed in float32 as torch's CPU kernel does).
    Downscaling this way aliases (it reads two pixels per output whatever the
    ratio): that is what the published pytorch-fid numbers include.

``"clean"``
    clean-fid's resize: each channel of the uint8 image as a float32 PIL image,
    bicubic (antialiased) resize to 299x299 on the host, clipped to [0, 255]. The
    network and its scaling stay pytorch-fid's (clean-fid's own TorchScript
    network normalises its [0, 255] input inside itself), so this mode changes
    only the resize.

Both then divide by 255 and map ``v -> 2 v - 1``, as pytorch-fid's
``normalize_input`` does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from glide_jax.errors import InputError
from glide_jax.models.inception import INPUT_SIZE

RESIZE_MODES = ("pytorch-fid", "clean")
DEFAULT_RESIZE = "pytorch-fid"


def check_resize_mode(name: str) -> str:
    if name not in RESIZE_MODES:
        raise InputError(f"unknown FID resize {name!r}; choose one of {', '.join(map(repr, RESIZE_MODES))}")
    return name


def check_images(images) -> np.ndarray:
    """``images`` as a uint8 ``[N, H, W, 3]`` numpy array, or a clear error saying what it is instead."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"FID features take uint8 images (0..255), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"FID features take RGB images [N, H, W, 3], got shape {images.shape}")
    if min(images.shape[1:3]) < 1:
        raise InputError(f"images of shape {images.shape} have no pixels")
    return images


@functools.lru_cache(maxsize=32)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float32 weights of torch's bilinear resize (``align_corners=False``) along one axis.

    Output pixel ``i`` reads source position ``(i + 0.5) * in/out - 0.5``, clamped at
    0, from its floor and the next pixel (the floor alone at the last pixel). The
    weights equal torch 2.13's CPU ``F.interpolate`` bit for bit (checked for inputs
    of 37, 53, 64, 256, 480, 640 and 1000 pixels).
    """
    if in_size < 1 or out_size < 1:
        raise InputError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    weights = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    if in_size == out_size:
        weights[rows, rows] = 1.0
        return weights
    scale = np.float32(in_size) / np.float32(out_size)
    # scale * (i + 0.5) - 0.5 with one rounding, as torch's CPU kernel computes it (a fused multiply-add): exact
    # in float64, then rounded to float32. Two roundings move some weights by an ulp of the source position.
    exact = np.float64(scale) * (rows.astype(np.float64) + 0.5) - 0.5
    source = np.maximum(exact.astype(np.float32), np.float32(0))
    first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    second = first + (first < in_size - 1)
    far = np.clip(source - first.astype(np.float32), 0, 1).astype(np.float32)
    np.add.at(weights, (rows, first), np.float32(1) - far)
    np.add.at(weights, (rows, second), far)
    weights.setflags(write=False)
    return weights


def bilinear_resize(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """Float images ``[B, H, W, C]`` resized to ``[B, size, size, C]`` as pytorch-fid's ``F.interpolate`` does."""
    rows = jnp.asarray(bilinear_matrix(images.shape[1], size))
    cols = jnp.asarray(bilinear_matrix(images.shape[2], size))
    highest = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,bhwc->bowc", rows, images, precision=highest)
    return jnp.einsum("pw,bowc->bopc", cols, images, precision=highest)


def clean_resize(images: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, size, size, 3]`` in [0, 255]: clean-fid's PIL bicubic, per channel."""
    images = check_images(images)
    out = np.empty((images.shape[0], size, size, 3), np.float32)
    for index, image in enumerate(images):
        for channel in range(3):
            plane = Image.fromarray(image[:, :, channel].astype(np.float32))  # mode "F": no rounding to uint8
            out[index, :, :, channel] = np.asarray(plane.resize((size, size), resample=Image.Resampling.BICUBIC))
    return np.clip(out, 0, 255, out=out)


def host_stage(images: np.ndarray, resize: str) -> np.ndarray:
    """What goes to the device for ``resize``: the uint8 images themselves, or clean-fid's resized floats."""
    return clean_resize(images) if check_resize_mode(resize) == "clean" else images


def device_stage(batch: jax.Array, resize: str) -> jax.Array:
    """The network input from :func:`host_stage`'s output: divided by 255, resized if not yet, mapped to [-1, 1]."""
    x = batch.astype(jnp.float32) / 255.0
    if check_resize_mode(resize) == "pytorch-fid":
        x = bilinear_resize(x)
    return 2.0 * x - 1.0
