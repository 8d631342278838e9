"""Map the released noise-aware CLIP checkpoints (PyTorch) onto ``glide_jax.models.clip`` parameters.

OpenAI ships the two CLIP towers as separate state dicts (``clip/image-enc``,
``clip/text-enc``); the logit scale is not in either, the reference rebuilds it
as ``log(config.logit_scale)``. Conversion is strict: a checkpoint that does
not fit the configuration exactly (a missing, unexpected or mis-shaped tensor)
is rejected with a single error counting every problem and naming the first
few of each kind (:mod:`glide_jax.hub.key_report`), so a wrong config or a
truncated file is never half-loaded.

The Flax-side tree is never materialised to find the expected shapes: it comes
from ``glide_jax.family.abstract_params`` (``jax.eval_shape`` of the
module's ``init``), so the released 158M-parameter layout can be checked
without allocating it. Name mapping is derived from that tree by rule (one
rule per naming difference), and the same rules give the inverse map used to
export parameters or compare against checkpoint manifests.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from glide_jax.errors import InputError
from glide_jax.hub.key_report import summarise
from glide_jax.config import ClipConfig
from glide_jax.family import abstract_params

TOWERS = {"image": "image_encoder", "text": "text_encoder"}

# Flax name component -> torch name component (applies anywhere on the path).
_RENAME = {
    "attn": "f_attn",
    "mlp": "f_mlp",
    "q": "f_q",
    "k": "f_k",
    "v": "f_v",
    "out": "f_c",
    "fc1": "f_1",
    "fc2": "f_2",
    "ln": "ln",
    "ln_pre": "input.ln",
    "ln_post": "output.ln",
    "proj": "output.f",
    "timestep_embedding": "input.w_t",
    "token_embedding": "input.w_voc",
    "position_embedding": "input.w_pos",
    "patch_embed": "input.patch_proj",
    "scale": "g",
    "bias": "b",
}

# Layout of each kind of tensor: flax array = torch array transposed by FORWARD[kind].
_FORWARD = {"copy": None, "linear": (1, 0), "conv": (2, 3, 1, 0)}  # conv: OIHW -> HWIO
_BACKWARD = {"copy": None, "linear": (1, 0), "conv": (3, 2, 0, 1)}  # HWIO -> OIHW


def _rule(path: Tuple[str, ...]) -> Tuple[str, str]:
    """Torch key and layout kind for a Flax parameter path inside one tower."""
    *parents, leaf = path
    if leaf == "kernel" and parents and parents[-1] == "patch_embed":
        return "blocks." + _RENAME["patch_embed"], "conv"
    parts = []
    for p in parents:
        parts.append(p if p.startswith("block_") else _RENAME[p])
    if leaf == "kernel":
        parts.append("w")
        kind = "linear"
    else:
        parts.append(_RENAME[leaf])
        kind = "copy"
    return "blocks." + ".".join(parts), kind


def _transpose(shape_or_array, perm):
    if perm is None:
        return shape_or_array
    if isinstance(shape_or_array, tuple):
        return tuple(shape_or_array[i] for i in perm)
    return np.transpose(shape_or_array, perm)


def _tower_table(config: ClipConfig, tower: str) -> Dict[str, Tuple[Tuple[str, ...], str, Tuple[int, ...]]]:
    """torch key -> (flax path inside the tower, layout kind, flax shape)."""
    if tower not in TOWERS:
        raise InputError(f"unknown CLIP tower {tower!r}; expected one of {sorted(TOWERS)}")
    flat = traverse_util.flatten_dict(abstract_params(config)[TOWERS[tower]])
    table = {}
    for path, leaf in flat.items():
        key, kind = _rule(path)
        table[key] = (path, kind, tuple(leaf.shape))
    return table


def torch_shapes(config: ClipConfig, tower: str) -> Dict[str, Tuple[int, ...]]:
    """Expected ``state_dict`` of the reference ``ImageEncoder`` (``"image"``) or ``TextEncoder`` (``"text"``): key -> shape."""
    return {k: _transpose(shape, _BACKWARD[kind]) for k, (_, kind, shape) in _tower_table(config, tower).items()}


# The kinds of problem a conversion reports, in the order they are listed.
_PROBLEM_KINDS = ("missing keys", "unexpected keys", "shape mismatches", "other")
Problems = Dict[str, List[str]]


def _problems() -> Problems:
    return {kind: [] for kind in _PROBLEM_KINDS}


def _convert_tower(config: ClipConfig, tower: str, state: Mapping[str, object], problems: Problems) -> Dict:
    table = _tower_table(config, tower)
    flat = {}
    for key, (path, kind, shape) in table.items():
        if key not in state:
            problems["missing keys"].append(
                f"{tower}: missing key {key!r} (expected shape {_transpose(shape, _BACKWARD[kind])})")
            continue
        array = np.asarray(state[key])
        want = _transpose(shape, _BACKWARD[kind])
        if tuple(array.shape) != want:
            problems["shape mismatches"].append(f"{tower}: key {key!r} has shape {tuple(array.shape)}, "
                                                f"expected {want}")
            continue
        flat[path] = jnp.asarray(_transpose(array, _FORWARD[kind]), dtype=jnp.float32)
    for key in sorted(set(state) - set(table)):
        problems["unexpected keys"].append(f"{tower}: unexpected key {key!r} with shape "
                                           f"{tuple(np.shape(state[key]))}")
    return traverse_util.unflatten_dict(flat)


def _raise(problems: Problems, config: ClipConfig) -> None:
    count = sum(len(items) for items in problems.values())
    if count:
        raise InputError(summarise(
            f"CLIP checkpoint does not match the configuration ({count} problem(s); "
            f"image {config.image_size}px, width image {config.n_head_image * config.n_head_state_image}, "
            f"text {config.n_head_text * config.n_head_state_text}, n_embd {config.n_embd})",
            [(kind, problems[kind]) for kind in _PROBLEM_KINDS]))


def convert_clip(
    config: ClipConfig,
    image_state: Mapping[str, object],
    text_state: Mapping[str, object],
    logit_scale: Optional[object] = None,
) -> Dict:
    """Both towers (+ log logit scale) to the full ``ClipModel`` parameter tree.

    ``logit_scale`` is the *log* scale as the reference holds it; ``None`` uses
    ``log(config.logit_scale)`` (what the reference does for the release).
    Problems in both towers are reported together in one ``ValueError``.
    """
    problems = _problems()
    image = _convert_tower(config, "image", image_state, problems)
    text = _convert_tower(config, "text", text_state, problems)
    if logit_scale is None:
        log_scale = np.log(np.float32(config.logit_scale))
    else:
        log_scale = np.asarray(logit_scale, dtype=np.float32)
        if log_scale.size != 1:
            problems["other"].append(f"logit_scale must be a scalar, got shape {log_scale.shape}")
    _raise(problems, config)
    return {
        "image_encoder": image,
        "text_encoder": text,
        "logit_scale": jnp.asarray(np.reshape(log_scale, ()), jnp.float32),
    }
