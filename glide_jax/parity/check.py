"""Which parity check a fixture needs, and running it: ``check_fixture(path) -> errors``.

The kind comes from the fixture's json: ``create_model_kwargs`` marks a U-Net
fixture, ``config_yaml`` a CLIP fixture, captions with a ``clip_score`` a CLIP-score
fixture (whose checkpoint is read beside it), a ``pytorch_fid`` version a FID fixture
(``glide_jax.parity.fid``, whose Inception weights are read beside it), and diffusion
settings a diffusion fixture (whose loops also read the model fixtures beside its folder).
Diffusion results are memoised per content (json, arrays and the model
fixtures the loops read), so a test run that checks the same fixture
from several tests computes it once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from glide_jax.errors import InputError
from glide_jax.parity.clip_score import ATOL_FACTORS, check_clip_score, is_clip_score_fixture
from glide_jax.parity.diffusion import check_diffusion_maths
from glide_jax.parity.fid import check_fid, is_fid_fixture
from glide_jax.parity.fixtures import Errors, load_fixture
from glide_jax.parity.loops import check_clip_guided_step, check_loops
from glide_jax.parity.models import check_clip, check_unet

FIXTURE_KINDS = ("model", "clip", "clip_score", "diffusion", "fid")
_DIFFUSION_RESULTS: Dict[str, Errors] = {}


def fixture_kind(meta: Mapping) -> str:
    """``"model"``, ``"clip"``, ``"clip_score"``, ``"diffusion"`` or ``"fid"``, from what the fixture's json
    describes."""
    if is_fid_fixture(meta):
        return "fid"
    if "create_model_kwargs" in meta:
        return "model"
    if "config_yaml" in meta:
        return "clip"
    if is_clip_score_fixture(meta):
        return "clip_score"
    if "losses_reference" in meta or "respace" in json.dumps(meta.get("array_groups", {})):
        return "diffusion"
    raise InputError("unrecognised fixture: its json has neither create_model_kwargs nor config_yaml "
                     "nor captions with a clip_score nor diffusion settings nor a pytorch_fid version")


def atol_factor(name: str) -> float:
    """How many times the common tolerance an output is held to (1 but for outputs on a larger scale)."""
    return ATOL_FACTORS.get(name, 1.0)


def _content_key(meta: Mapping, arrays: Mapping[str, np.ndarray], root: Optional[Path]) -> str:
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    if root is not None:
        for f in sorted(list(root.glob("models/*.npz")) + list(root.glob("clip/*.npz"))):
            stat = f.stat()
            digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def check_diffusion(meta: Mapping, arrays: Mapping[str, np.ndarray], path=None) -> Errors:
    """Every group of a diffusion fixture: schedules, steps and losses, then the loops and the CLIP-guided step.

    The loops need ``path``: their networks are the fixtures in ``models/``
    and ``clip/`` beside the fixture's own folder.
    """
    has_loops = any(k.startswith(("loop/", "clipguide/")) for k in arrays)
    if has_loops and path is None:
        raise InputError("the loops of a diffusion fixture need its path (models/ and clip/ are read beside it)")
    root = Path(path).resolve().parent.parent if path is not None else None
    key = _content_key(meta, arrays, root)
    if key not in _DIFFUSION_RESULTS:
        settings = meta.get("settings", {})
        errors = check_diffusion_maths(arrays, settings)
        if has_loops:
            errors.update(check_loops(arrays, settings, root))
            if "clipguide/sample" in arrays:
                errors.update(check_clip_guided_step(arrays, settings, root))
        _DIFFUSION_RESULTS[key] = errors
    return dict(_DIFFUSION_RESULTS[key])


def check_fixture(npz_path) -> Errors:
    """Run the parity check for a fixture file; returns ``{output: (max abs error, max relative error)}``."""
    meta, arrays = load_fixture(npz_path)
    kind = fixture_kind(meta)
    if kind == "model":
        return check_unet(meta, arrays)
    if kind == "clip":
        return check_clip(meta, arrays)
    if kind == "clip_score":
        return check_clip_score(meta, arrays, npz_path)
    if kind == "fid":
        return check_fid(meta, arrays, Path(npz_path))
    return check_diffusion(meta, arrays, Path(npz_path))
