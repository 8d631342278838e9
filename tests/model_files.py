"""Test helpers that go the other way from the library: Flax parameters back to PyTorch state dicts,
provenance files of model directories, the held-out split's membership rule and rewrite rules as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import flax.linen as nn
from flax import traverse_util
import numpy as np

from glide_jax.data import shapes
from glide_jax.hub import convert_clip, model_dir, torch_layout


def unet_to_torch(params) -> Dict[str, np.ndarray]:
    """A U-Net's ``{"params": ...}`` as the reference's state dict."""
    return torch_layout.to_torch_state(params)


def export_clip(params: Mapping) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray]:
    """The noisy CLIP's parameters as ``(image_state, text_state, log_logit_scale)`` in torch names and layouts."""
    params = nn.unbox(params)
    out = []
    for tower in ("image", "text"):
        state = {}
        for path, value in traverse_util.flatten_dict(params[convert_clip.TOWERS[tower]]).items():
            key, kind = convert_clip._rule(path)
            state[key] = np.asarray(convert_clip._transpose(np.asarray(value), convert_clip._BACKWARD[kind]))
        out.append(state)
    return out[0], out[1], np.asarray(params["logit_scale"], np.float32)


def read_card(directory) -> Dict[str, Any]:
    """A model directory's free-form provenance: ``model_card.json``, else ``training.json``, else empty."""
    for name in (model_dir.CARD_FILE, model_dir.TRAINING_FILE):
        path = Path(directory) / name
        if path.exists():
            return json.loads(path.read_text())
    return {}


def is_heldout(objects: List[shapes.ObjectSpec], relation: Optional[str]) -> bool:
    """True if a scene belongs to the held-out split (only two-object scenes can)."""
    if relation is None:
        return False
    a, b = objects
    combo = (a.color, a.shape, relation, b.color, b.shape)
    return (a.color, a.shape) in shapes.HELDOUT_PAIRS or (b.color, b.shape) in shapes.HELDOUT_PAIRS or (
        combo in set(shapes.HELDOUT_COMBOS))


def rewrites_to_json(rules) -> list:
    """``PromptRewrites`` as ``sampling.json`` holds them (what ``PromptRewrites.from_json`` reads)."""
    return [{"pattern": r.pattern, "replacement": r.replacement, **({"note": r.note} if r.note else {})}
            for r in rules.rules]
