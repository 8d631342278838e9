"""The Inception-v3 network FID is defined with, as pytorch-fid runs it, returning pool3 features.

FID numbers are only comparable when computed with one particular network:
the 2015-12-05 TensorFlow Inception graph, which pytorch-fid ports onto
torchvision's ``Inception3`` with four kinds of patched blocks. Those patches
matter for the features, so they are reproduced here exactly:

- the average-pool branch of the A, C and first E blocks divides by the
  number of real (unpadded) pixels in each 3x3 window (TensorFlow's pooling,
  ``count_include_pad=False`` in torch);
- the last E block (``Mixed_7c``) pools its branch with a 3x3 *max* pool;
- every convolution is bias-free and followed by batch norm with
  ``epsilon=1e-3`` in inference mode (the stored statistics, never batch ones)
  and a ReLU.

Images are NHWC, already resized to 299x299 and scaled to [-1, 1]
(:mod:`glide_jax.evaluation.preprocess` does both, in pytorch-fid's or clean-fid's
way). The output is the global average of the last block: ``[batch, 2048]``.
Layer names follow torchvision's, so ``Mixed_6b/branch7x7_2/conv/kernel`` is
``Mixed_6b.branch7x7_2.conv.weight`` in the PyTorch state dict
(:mod:`glide_jax.hub.convert_inception`). Batch-norm statistics live in the
``batch_stats`` collection, as ``flax.linen.BatchNorm`` keeps them.

Convolutions run at ``precision="highest"`` by default: on accelerators whose
default float32 convolution is reduced-precision (TF32, bf16 passes), features
would otherwise drift by far more than FID comparisons tolerate.
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax.errors import InputError

FEATURES = 2048  # pool3 width
INPUT_SIZE = 299  # the resolution the network was trained and FID is defined at
BATCH_NORM_EPSILON = 1e-3


class BasicConv(nn.Module):
    """Convolution without bias, inference-mode batch norm, ReLU (torchvision's ``BasicConv2d``).

    ``padded`` pads ``kernel // 2`` on each side (every padded convolution of
    the network is of that kind); otherwise the convolution is unpadded.
    """

    features: int
    kernel: Tuple[int, int] = (1, 1)
    stride: int = 1
    padded: bool = False
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = [(k // 2, k // 2) for k in self.kernel] if self.padded else [(0, 0), (0, 0)]
        x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=pad, use_bias=False,
                    precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3, stride 1, padded by 1, averaging only the real pixels of each window (TensorFlow's pooling)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, padded: bool) -> jax.Array:
    padding = ((1, 1), (1, 1)) if padded else "VALID"
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class InceptionA(nn.Module):
    """35x35 block (``Mixed_5b..5d``): 1x1, 5x5, double 3x3 and average-pool branches."""

    pool_features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        conv = lambda features, name, kernel=(1, 1): BasicConv(  # noqa: E731
            features, kernel, padded=True, precision=self.precision, name=name)
        branch1x1 = conv(64, "branch1x1")(x)
        branch5x5 = conv(64, "branch5x5_2", (5, 5))(conv(48, "branch5x5_1")(x))
        double = conv(64, "branch3x3dbl_1")(x)
        double = conv(96, "branch3x3dbl_3", (3, 3))(conv(96, "branch3x3dbl_2", (3, 3))(double))
        pool = conv(self.pool_features, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch5x5, double, pool], axis=-1)


class InceptionB(nn.Module):
    """35 -> 17 reduction (``Mixed_6a``): strided 3x3, strided double 3x3, strided max pool."""

    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv(384, (3, 3), stride=2, precision=self.precision, name="branch3x3")(x)
        double = BasicConv(64, precision=self.precision, name="branch3x3dbl_1")(x)
        double = BasicConv(96, (3, 3), padded=True, precision=self.precision, name="branch3x3dbl_2")(double)
        double = BasicConv(96, (3, 3), stride=2, precision=self.precision, name="branch3x3dbl_3")(double)
        return jnp.concatenate([branch3x3, double, _max_pool_3x3(x, 2, padded=False)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block (``Mixed_6b..6e``): factorised 7x7 convolutions as 1x7 and 7x1 pairs."""

    channels_7x7: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        conv = lambda features, name, kernel=(1, 1): BasicConv(  # noqa: E731
            features, kernel, padded=True, precision=self.precision, name=name)
        branch1x1 = conv(192, "branch1x1")(x)
        branch7x7 = conv(c7, "branch7x7_1")(x)
        branch7x7 = conv(192, "branch7x7_3", (7, 1))(conv(c7, "branch7x7_2", (1, 7))(branch7x7))
        double = conv(c7, "branch7x7dbl_1")(x)
        for index, (features, kernel) in enumerate([(c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))], 2):
            double = conv(features, f"branch7x7dbl_{index}", kernel)(double)
        pool = conv(192, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch7x7, double, pool], axis=-1)


class InceptionD(nn.Module):
    """17 -> 8 reduction (``Mixed_7a``): strided 3x3 after 1x1, strided 3x3 after a 7x7 pair, max pool."""

    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        conv = lambda features, name, kernel=(1, 1), stride=1: BasicConv(  # noqa: E731
            features, kernel, stride=stride, padded=stride == 1, precision=self.precision, name=name)
        branch3x3 = conv(320, "branch3x3_2", (3, 3), 2)(conv(192, "branch3x3_1")(x))
        branch7x7x3 = conv(192, "branch7x7x3_1")(x)
        branch7x7x3 = conv(192, "branch7x7x3_3", (7, 1))(conv(192, "branch7x7x3_2", (1, 7))(branch7x7x3))
        branch7x7x3 = conv(192, "branch7x7x3_4", (3, 3), 2)(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3(x, 2, padded=False)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (``Mixed_7b``, ``Mixed_7c``): 3x3 convolutions split into parallel 1x3 and 3x1 halves.

    ``max_pool`` selects the pool of the pool branch: average for ``Mixed_7b``,
    max for ``Mixed_7c``, as in the TensorFlow graph FID was defined with.
    """

    max_pool: bool = False
    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        conv = lambda features, name, kernel=(1, 1): BasicConv(  # noqa: E731
            features, kernel, padded=True, precision=self.precision, name=name)
        branch1x1 = conv(320, "branch1x1")(x)
        branch3x3 = conv(384, "branch3x3_1")(x)
        branch3x3 = jnp.concatenate([conv(384, "branch3x3_2a", (1, 3))(branch3x3),
                                     conv(384, "branch3x3_2b", (3, 1))(branch3x3)], axis=-1)
        double = conv(384, "branch3x3dbl_2", (3, 3))(conv(448, "branch3x3dbl_1")(x))
        double = jnp.concatenate([conv(384, "branch3x3dbl_3a", (1, 3))(double),
                                  conv(384, "branch3x3dbl_3b", (3, 1))(double)], axis=-1)
        pooled = _max_pool_3x3(x, 1, padded=True) if self.max_pool else _avg_pool_3x3(x)
        pool = conv(192, "branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, double, pool], axis=-1)


class FIDInceptionV3(nn.Module):
    """Images ``[B, 299, 299, 3]`` in [-1, 1] -> pool3 features ``[B, 2048]`` (float32).

    Any input of at least 75x75 runs (the network is convolutional up to the
    global pool), but only 299x299 gives the features FID is defined with.
    """

    precision: str = "highest"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"FIDInceptionV3 takes NHWC RGB images [B, H, W, 3], got shape {images.shape}")
        p = self.precision
        x = images.astype(jnp.float32)
        x = BasicConv(32, (3, 3), stride=2, precision=p, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padded=True, precision=p, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3(x, 2, padded=False)
        x = BasicConv(80, precision=p, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3(x, 2, padded=False)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, precision=p, name=name)(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels, precision=p, name=name)(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, precision=p, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, precision=p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def abstract_variables(model: FIDInceptionV3 = FIDInceptionV3()):
    """Shapes and dtypes of the network's variables (``params`` and ``batch_stats``), nothing allocated."""
    sample = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), sample)
