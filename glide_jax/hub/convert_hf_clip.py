"""Hugging Face CLIP checkpoints (``openai/clip-vit-*`` layout) <-> ``glide_jax.models.clip_vit`` parameters.

A checkpoint directory holds ``config.json`` (read into :class:`~glide_jax.models.clip_vit.ClipVitConfig`)
and the weights as ``model.safetensors`` (read with the torch-free, bounded reader of
:mod:`glide_jax.hub.safetensors`) or, for older uploads, ``pytorch_model.bin`` (read with
:mod:`glide_jax.hub.torch_zip`, which never runs pickled code).

Names map by rule, one rule per naming difference (``encoder.layers.3.self_attn.q_proj`` is
``block_3/attn/q``, ``layer_norm1`` the attention branch's ``ln``, and so on); linear weights are
transposed (``[out, in]`` -> ``[in, out]``) and the patch convolution goes from OIHW to HWIO.
Conversion is strict: every missing, unexpected or mis-shaped tensor is collected and reported in one
:class:`HFClipMismatchError` whose message gives the counts and the first few names, so a checkpoint
of another size or model is never half-loaded. The ``position_ids`` buffers older checkpoints carry
are not parameters and are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Dict, Iterable, Mapping, Tuple

from flax import traverse_util
import flax.linen as nn
import jax
import numpy as np

from glide_jax.errors import InputError
from glide_jax.hub.checkpoint_zip import CheckpointFormatError, MiB
from glide_jax.hub.safetensors import load_safetensors
from glide_jax.hub.torch_layout import CheckpointMismatchError
from glide_jax.hub.torch_zip import load_state_dict
from glide_jax.models.clip_vit import ClipVitConfig, abstract_params

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
MAX_CONFIG_BYTES = 1 * MiB
SHOWN_NAMES = 5  # names listed per kind of problem in an error message

# Buffers some checkpoints store that are not parameters.
IGNORED_KEYS = frozenset({"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"})

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_BLOCK = re.compile(r"^block_(\d+)$")
_ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
_EMBEDDINGS = {"class_embedding": "embeddings.class_embedding",
               "position_embedding": "embeddings.position_embedding.weight",
               "token_embedding": "embeddings.token_embedding.weight"}

Path_ = Tuple[str, ...]


class HFClipMismatchError(CheckpointMismatchError):
    """A Hugging Face CLIP state dict that does not fit the configuration; the message is a summary."""

    def __init__(self, what: str, missing: Iterable[str], unexpected: Iterable[str], misshaped: Iterable[str]):
        self.missing, self.unexpected, self.misshaped = sorted(missing), sorted(unexpected), sorted(misshaped)
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("mis-shaped", self.misshaped)):
            if items:
                more = f", ... ({len(items) - SHOWN_NAMES} more)" if len(items) > SHOWN_NAMES else ""
                parts.append(f"{len(items)} {title}: {'; '.join(items[:SHOWN_NAMES])}{more}")
        ValueError.__init__(self, f"{what}: the checkpoint does not match the CLIP configuration ("
                            + " | ".join(parts) + ")")


def hf_key(path: Path_) -> Tuple[str, str]:
    """Hugging Face key and layout kind (``copy``, ``linear`` or ``conv``) of a Flax parameter path."""
    if path == ("logit_scale",):
        return "logit_scale", "copy"
    if len(path) == 2 and path[0] in ("visual_projection", "text_projection") and path[1] == "kernel":
        return f"{path[0]}.weight", "linear"
    tower, *rest = path
    if tower not in ("vision_model", "text_model") or not rest:
        raise InputError(f"no Hugging Face name for parameter {'/'.join(path)}")
    if len(rest) == 1 and rest[0] in _EMBEDDINGS:
        return f"{tower}.{_EMBEDDINGS[rest[0]]}", "copy"
    if rest == ["patch_embedding", "kernel"]:
        return f"{tower}.embeddings.patch_embedding.weight", "conv"
    *modules, leaf = rest
    kind = "linear" if leaf == "kernel" else "copy"
    block = _BLOCK.match(modules[0]) if modules else None
    if block is None:  # a tower-level layer norm: pre_layrnorm, post_layernorm, final_layer_norm
        return f"{tower}.{'.'.join(modules)}.{_LEAF[leaf]}", kind
    layer = f"{tower}.encoder.layers.{block.group(1)}"
    branch, name = modules[1], modules[2]
    if name == "ln":
        return f"{layer}.{'layer_norm1' if branch == 'attn' else 'layer_norm2'}.{_LEAF[leaf]}", kind
    if branch == "attn":
        return f"{layer}.self_attn.{_ATTENTION[name]}.{_LEAF[leaf]}", kind
    return f"{layer}.mlp.{name}.{_LEAF[leaf]}", kind


def _to_hf_shape(kind: str, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    if kind == "linear":
        return (shape[1], shape[0])
    if kind == "conv":
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    return tuple(shape)


def _to_flax(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == "linear":
        return np.transpose(array)
    if kind == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    return array


def _to_hf(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == "linear":
        return np.transpose(array)
    if kind == "conv":
        return np.transpose(array, (3, 2, 0, 1))
    return array


def layout(config: ClipVitConfig) -> Dict[str, Tuple[Path_, str, Tuple[int, ...]]]:
    """Hugging Face key -> (Flax path, layout kind, Hugging Face shape), for every parameter of ``config``."""
    table = {}
    for path, leaf in traverse_util.flatten_dict(abstract_params(config)).items():
        key, kind = hf_key(path)
        table[key] = (path, kind, _to_hf_shape(kind, tuple(leaf.shape)))
    return table


def hf_shapes(config: ClipVitConfig) -> Dict[str, Tuple[int, ...]]:
    """The state dict a Hugging Face ``CLIPModel`` of ``config`` holds: key -> shape."""
    return {key: shape for key, (_, _, shape) in layout(config).items()}


def convert_hf_clip(config: ClipVitConfig, state: Mapping[str, np.ndarray], what: str = "CLIP checkpoint") -> Dict:
    """Strictly convert a Hugging Face CLIP state dict to the Flax parameter tree (float32 numpy arrays)."""
    table = layout(config)
    keys = set(state) - IGNORED_KEYS
    misshaped = [f"{k} {tuple(np.shape(state[k]))} (expected {table[k][2]})"
                 for k in sorted(keys & set(table)) if tuple(np.shape(state[k])) != table[k][2]]
    missing, unexpected = set(table) - keys, keys - set(table)
    if missing or unexpected or misshaped:
        raise HFClipMismatchError(what, missing, unexpected, misshaped)
    flat = {path: _to_flax(kind, np.asarray(state[key], np.float32)).copy()
            for key, (path, kind, _) in table.items()}
    return traverse_util.unflatten_dict(flat)


def export_hf_clip(params) -> Dict[str, np.ndarray]:
    """Inverse of :func:`convert_hf_clip`: a Flax parameter tree as a Hugging Face state dict."""
    flat = traverse_util.flatten_dict(nn.unbox(params))
    out = {}
    for path, value in flat.items():
        key, kind = hf_key(path)
        out[key] = _to_hf(kind, np.asarray(jax.device_get(value))).copy()
    return out


def read_hf_config(directory, dtype: str = "float32") -> ClipVitConfig:
    """The :class:`ClipVitConfig` of ``directory/config.json`` (capped at 1 MiB, must be a JSON object)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a Hugging Face CLIP directory needs its {CONFIG_FILE}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is too large for a model config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    try:
        return ClipVitConfig.from_hf_dict(data, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {e}") from None


def read_hf_state(directory) -> Dict[str, np.ndarray]:
    """The weights of a Hugging Face checkpoint directory: ``model.safetensors``, else ``pytorch_model.bin``."""
    directory = Path(directory)
    if (directory / SAFETENSORS_FILE).exists():
        return load_safetensors(directory / SAFETENSORS_FILE)
    if (directory / TORCH_FILE).exists():
        return load_state_dict(directory / TORCH_FILE)
    if (directory / (SAFETENSORS_FILE + ".index.json")).exists():
        raise CheckpointFormatError(f"{directory}: sharded checkpoints (model.safetensors.index.json) are not read; "
                                    "merge the shards into one model.safetensors")
    raise FileNotFoundError(f"{directory} holds neither {SAFETENSORS_FILE} nor {TORCH_FILE}")


def load_hf_clip(directory, dtype: str = "float32") -> Tuple[ClipVitConfig, Dict]:
    """``(config, params)`` of a Hugging Face CLIP checkpoint directory, converted strictly."""
    config = read_hf_config(directory, dtype)
    params = convert_hf_clip(config, read_hf_state(directory), what=str(directory))
    return config, params

