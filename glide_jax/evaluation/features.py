"""Pool3 features of uint8 images through the FID Inception: ``inception_features(variables, images)``.

Images go through in fixed-size batches: the last one is padded with blank
images (their features dropped) so every call with the same ``batch_size``
reuses one compiled network, whatever the number of images. The resize to
299x299 is compiled separately per input size (it is small), so images of
several sizes share the network's compilation too. The next batch is prepared
and dispatched before the previous one's features are fetched, so the host
work (clean-fid's PIL resize) overlaps the device's.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import numpy as np

from glide_jax.errors import InputError
from glide_jax.evaluation.preprocess import DEFAULT_RESIZE, check_images, check_resize_mode, device_stage, host_stage
from glide_jax.models.inception import FEATURES, FIDInceptionV3

DEFAULT_BATCH_SIZE = 32
_MODEL = FIDInceptionV3()


@functools.partial(jax.jit, static_argnames=("resize",))
def _network_input(batch: jax.Array, resize: str) -> jax.Array:
    return device_stage(batch, resize)


@jax.jit
def _pool3(variables, images: jax.Array) -> jax.Array:
    return _MODEL.apply(variables, images)


def inception_features(variables, images, resize: str = DEFAULT_RESIZE,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """float32 ``[N, 2048]`` pool3 features of uint8 ``[N, H, W, 3]`` images, as pytorch-fid computes them.

    ``variables`` are ``FIDInceptionV3``'s (:func:`glide_jax.hub.convert_inception.load_inception`);
    they are placed on the device once per call, so pass device arrays to avoid
    even that. ``resize`` is ``"pytorch-fid"`` (bilinear, the default) or
    ``"clean"`` (clean-fid's bicubic); see :mod:`glide_jax.evaluation.preprocess`.
    """
    images = check_images(images)
    check_resize_mode(resize)
    if type(batch_size) is not int or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    out = np.empty((len(images), FEATURES), np.float32)
    variables = jax.device_put(variables)
    pending: Optional[tuple] = None
    for start in range(0, len(images), batch_size):
        chunk = host_stage(images[start:start + batch_size], resize)
        count = len(chunk)
        if count < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)])
        features = _pool3(variables, _network_input(chunk, resize))
        if pending is not None:
            _store(out, *pending)
        pending = (start, count, features)
    if pending is not None:
        _store(out, *pending)
    return out


def _store(out: np.ndarray, start: int, count: int, features: jax.Array) -> None:
    out[start:start + count] = np.asarray(features)[:count]
