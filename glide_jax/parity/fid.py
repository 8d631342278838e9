"""Parity of the FID machinery with pytorch-fid: Inception features per image group, and the Fréchet distance.

A FID fixture is ``fid.npz`` + ``fid.json`` (its json names the ``pytorch_fid``
version) with the Inception state dict ``pt_inception-*.pth`` beside them (see
``tools/make_fid_fixtures.py`` in the shared fixtures). Rows:

- ``features/<group>``: pool3 features of ``images<group>`` against ``feats<group>``
  (absolute error, judged by the tool's ``--atol``);
- ``frechet/stats:rel`` and ``frechet/stats_eigh:rel``: the distance between the
  fixture's two Gaussians (``sigma = diag(d) + U U^T``) against pytorch-fid's
  (scipy ``sqrtm``) and the fixture's own eigendecomposition value; rows named
  ``:rel`` are judged by their relative error (``--rtol``);
- ``frechet/images:info``: the distance between the statistics of two groups'
  features (24 and 8 samples), from this reader's features. The covariances are
  rank-deficient, so the distance amplifies the features' float32 noise (5e-5 abs
  gave 1.3e-6 relative): printed for information, never judged (``:info``).

Results are memoised per fixture content, so the tests and the tool share one run.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Dict, Mapping

import numpy as np

from glide_jax.evaluation.features import inception_features
from glide_jax.evaluation.frechet import FeatureStatistics, SmallSampleWarning, frechet_distance
from glide_jax.hub.convert_inception import load_inception
from glide_jax.parity.fixtures import Errors, compare

GROUPS = ("64", "256", "_odd")
_RESULTS: Dict[str, Errors] = {}


def is_fid_fixture(meta: Mapping) -> bool:
    return "pytorch_fid" in meta


def inception_weights(npz_path) -> Path:
    """The one ``pt_inception-*.pth`` beside a FID fixture."""
    folder = Path(npz_path).resolve().parent
    found = sorted(folder.glob("pt_inception*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(f"a FID fixture needs exactly one pt_inception*.pth beside it in {folder}, "
                                f"found {len(found)}")
    return found[0]


def _gaussian(arrays, index: int):
    u, d = arrays[f"stats_u{index}"], arrays[f"stats_d{index}"]
    return arrays[f"stats_mu{index}"], np.diag(d) + u @ u.T


def _relative(got: float, want: float):
    error = abs(got - want)
    return error, error / max(abs(want), 1e-12)


def _content_key(meta: Mapping, npz_path: Path, weights: Path) -> str:
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode())
    for f in (npz_path, weights):
        stat = f.stat()
        digest.update(f"{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def check_fid(meta: Mapping, arrays: Mapping[str, np.ndarray], npz_path, batch_size: int = 8) -> Errors:
    """Every row of a FID fixture: ``{row: (max abs error, max relative error)}``."""
    npz_path = Path(npz_path)
    weights = inception_weights(npz_path)
    key = _content_key(meta, npz_path, weights)
    if key in _RESULTS:
        return dict(_RESULTS[key])
    variables = load_inception(weights)
    errors: Errors = {}
    features = {}
    for group in GROUPS:
        if f"images{group}" in arrays:
            features[group] = inception_features(variables, arrays[f"images{group}"], batch_size=batch_size)
            errors[f"features/{group.lstrip('_')}"] = compare(features[group], arrays[f"feats{group}"])
    (mu1, sigma1), (mu2, sigma2) = _gaussian(arrays, 1), _gaussian(arrays, 2)
    distance = frechet_distance(mu1, sigma1, mu2, sigma2)
    errors["frechet/stats:rel"] = _relative(distance, float(arrays["fid_stats"]))
    errors["frechet/stats_eigh:rel"] = _relative(distance, float(arrays["fid_stats_eigh"]))
    if "fid_images" in arrays and {"64", "256"} <= set(features):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleWarning)  # the fixture's groups are small on purpose
            first = FeatureStatistics().add(features["64"]).mean_cov()
            second = FeatureStatistics().add(features["256"]).mean_cov()
        errors["frechet/images:info"] = _relative(frechet_distance(*first, *second), float(arrays["fid_images"]))
    _RESULTS[key] = errors
    return dict(errors)
