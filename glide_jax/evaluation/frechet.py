"""Feature statistics and the Fréchet distance between them, in float64 on the host, as pytorch-fid defines FID.

FID is ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))``. pytorch-fid takes
the square root of the non-symmetric product with ``scipy.linalg.sqrtm``; here
the trace comes from two symmetric eigendecompositions instead, with no scipy:
``S1 S2`` is similar to ``A S2 A`` with ``A = sqrt(S1)`` (symmetric, from
``eigh(S1)``), which is symmetric positive semi-definite, so ``tr sqrt(S1 S2)``
is the sum of the square roots of ``eigvalsh(A S2 A)``. Eigenvalues that
rounding pushes below zero are clipped, where ``sqrtm`` would return a complex
matrix. On well-conditioned statistics the two agree to about 1e-12 relative.

:class:`FeatureStatistics` accumulates the mean and covariance from batches of
features (and merges the statistics of several hosts) without keeping the
features: a running mean and a centred scatter matrix, combined batch by batch
(Chan et al.'s pairwise update), so no precision is lost when the mean is large
against the spread. ``mean_cov`` gives what ``np.mean`` and ``np.cov`` give on
all the features at once.

Statistics are exchanged as pytorch-fid's ``.npz`` files: arrays ``mu`` ``[D]``
and ``sigma`` ``[D, D]``.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from glide_jax.errors import InputError
from glide_jax.errors import InputWarning

# Fewer samples than feature dimensions leave the covariance rank-deficient: FID is then biased and unstable,
# and not comparable with published figures (which use 10k-50k samples).
MIN_SAMPLES = 2048


class SmallSampleWarning(InputWarning):
    """Statistics computed from fewer than ``MIN_SAMPLES`` feature vectors."""


def _as_features(features, dims: Optional[int]) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise InputError(f"features must be a 2-D array [N, D], got shape {features.shape}")
    if dims is not None and features.shape[1] != dims:
        raise InputError(f"features have {features.shape[1]} dimensions, these statistics {dims}")
    if not np.issubdtype(features.dtype, np.floating):
        raise TypeError(f"features must be floating point, got dtype {features.dtype}")
    features = features.astype(np.float64)
    if not np.isfinite(features).all():
        raise InputError("features hold NaN or infinite values")
    return features


class FeatureStatistics:
    """Running mean and covariance of feature vectors: ``add`` batches, ``merge`` other hosts', ``mean_cov``."""

    def __init__(self, dims: int = 2048):
        if type(dims) is not int or dims < 1:
            raise InputError(f"dims must be a positive integer, got {dims!r}")
        self.dims = dims
        self.count = 0
        self.mean = np.zeros(dims, np.float64)
        self.scatter = np.zeros((dims, dims), np.float64)  # sum over samples of (x - mean)(x - mean)^T

    def _combine(self, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        total = self.count + count
        delta = mean - self.mean
        self.scatter += scatter + np.outer(delta, delta) * (self.count * count / total)
        self.mean += delta * (count / total)
        self.count = total

    def add(self, features) -> "FeatureStatistics":
        """Include a batch ``[N, dims]`` of features (any float dtype; accumulated in float64)."""
        features = _as_features(features, self.dims)
        if len(features):
            mean = features.mean(axis=0)
            centred = features - mean
            self._combine(len(features), mean, centred.T @ centred)
        return self

    def merge(self, other: "FeatureStatistics") -> "FeatureStatistics":
        """Include another accumulator's samples (another host's, say); ``other`` is unchanged."""
        if not isinstance(other, FeatureStatistics):
            raise TypeError(f"can only merge FeatureStatistics, got {type(other).__name__}")
        if other.dims != self.dims:
            raise InputError(f"cannot merge statistics of {other.dims} dimensions into {self.dims}")
        if other.count:
            self._combine(other.count, other.mean, other.scatter)
        return self

    def mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` as ``np.mean(x, 0)`` and ``np.cov(x, rowvar=False)`` (N - 1 normalised), float64.

        Warns (:class:`SmallSampleWarning`) below ``MIN_SAMPLES`` samples.
        """
        if self.count < 2:
            raise InputError(f"a covariance needs at least 2 samples, these statistics have {self.count}")
        if self.count < MIN_SAMPLES:
            warnings.warn(f"FID statistics from {self.count} samples, fewer than {MIN_SAMPLES}: the covariance is "
                          "rank-deficient and the distance biased, not comparable with published FIDs",
                          SmallSampleWarning, stacklevel=2)
        return self.mean.copy(), self.scatter / (self.count - 1)


def _check_gaussian(mu, sigma, name: str) -> Tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise InputError(f"{name}: mu must be a vector [D], got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{name}: sigma must be [{mu.shape[0]}, {mu.shape[0]}] to match mu, got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"{name}: mu or sigma holds NaN or infinite values")
    return mu, sigma


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (pytorch-fid's FID formula)."""
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first statistics")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second statistics")
    if mu1.shape != mu2.shape:
        raise InputError(f"the statistics have {mu1.shape[0]} and {mu2.shape[0]} dimensions")
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    root = _symmetric_sqrt(sigma1)
    product = root @ sigma2 @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def save_statistics(path, mu, sigma) -> Path:
    """Write ``mu`` and ``sigma`` as pytorch-fid's ``.npz`` (readable by its ``fid_score`` as a path)."""
    mu, sigma = _check_gaussian(mu, sigma, str(path))
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: FID statistics are written as .npz files (numpy would add the suffix)")
    np.savez_compressed(path, mu=mu, sigma=sigma)
    return path


def load_statistics(path) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` (float64) from a pytorch-fid ``.npz``, checked for shape and finiteness."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FID statistics {path} do not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # numpy's words for "not an .npy/.npz" and "holds pickles"
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds one array, not pytorch-fid's .npz of mu and sigma")
    with loaded as archive:
        missing = [key for key in ("mu", "sigma") if key not in archive.files]
        if missing:
            raise InputError(f"{path} has no {' or '.join(missing)} array (it holds "
                             f"{', '.join(archive.files[:5]) or 'nothing'}); pytorch-fid statistics hold mu and sigma")
        try:
            mu, sigma = archive["mu"], archive["sigma"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: mu or sigma is unreadable ({type(e).__name__}: {e})") from e
    for name, array in (("mu", mu), ("sigma", sigma)):
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise InputError(f"{path}: {name} has dtype {array.dtype}, not real numbers")
    return _check_gaussian(mu, sigma, os.fspath(path))
