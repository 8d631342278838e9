"""The reference networks stored in model and CLIP fixtures, as glide_jax configs and params.

A U-Net fixture carries ``create_model_kwargs`` in its json and the torch
state under ``state/``; a CLIP fixture carries ``config_yaml`` and the two
encoders' states under ``state/image/`` and ``state/text/``. Conversion goes
through the same code that loads released checkpoints (``glide_jax.hub``), so
a parity check covers it too. The sampling-loop checks reuse the networks of
the fixtures beside theirs; ``unet_fixture``/``clip_fixture`` convert each
file once per process.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from glide_jax.config import ClipConfig, UNetConfig
from glide_jax.hub.convert_clip import convert_clip
from glide_jax.hub.convert_unet import unet_from_torch
from glide_jax.parity.fixtures import load_fixture, prefixed


def unet_from_fixture(meta: dict, arrays: Mapping[str, np.ndarray]):
    """(UNetConfig, params) of a U-Net fixture."""
    config = UNetConfig.from_reference(meta["create_model_kwargs"])
    return config, unet_from_torch(prefixed(arrays, "state/"), config)


def clip_from_fixture(meta: dict, arrays: Mapping[str, np.ndarray]):
    """(ClipConfig, params) of a noise-aware CLIP fixture."""
    config = ClipConfig.from_reference(meta["config_yaml"])
    params = convert_clip(config, prefixed(arrays, "state/image/"), prefixed(arrays, "state/text/"),
                          arrays.get("state/logit_scale"))
    return config, params


@functools.lru_cache(maxsize=None)
def unet_fixture(npz: str):
    """(UNetConfig, params) of the U-Net fixture file ``npz``, converted once per file."""
    return unet_from_fixture(*load_fixture(npz))


@functools.lru_cache(maxsize=None)
def clip_fixture(npz: str):
    """(ClipConfig, params) of the CLIP fixture file ``npz``, converted once per file."""
    return clip_from_fixture(*load_fixture(npz))


def fixture_file(root: Path, text: str, folder: str, default: str) -> str:
    """The ``<folder>/<name>.npz`` that a settings string mentions (else ``default``), under ``root``."""
    found = re.search(rf"({folder}/[\w.\-]+\.npz)", text or "")
    return str(Path(root) / (found.group(1) if found else default))
