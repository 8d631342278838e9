"""Warm-starting a text-to-image U-Net from a trained one, possibly one resolution level deeper.

Why: GLIDE's own 64×64 base goes down to 8×8 (an eighth of the side); the
embedded 32×32 base stops at 8×8 (a quarter), whose convolutions see less of
the image at once. To try the deeper layout without retraining from scratch
(it was tried for relations, where it did not help within 1,000 steps; see
docs/training.md), a model can be deepened by one level and trained on:

* every block of the source keeps its name and weights, except that the
  output blocks shift by one level's worth (``num_res_blocks + 1``);
* the new level's blocks (a downsampling block, ``num_res_blocks`` input
  blocks and ``num_res_blocks + 1`` output blocks) start as copies of the
  source's coarsest level (and of its last downsampling block), which needs
  the new level to have the same width (``channel_mult[-1]`` repeated) and
  the source's two coarsest levels to share it (so the copied blocks fit);
* the middle block moves down to the new level unchanged.

The deepened network computes something different at step 0 (its middle
block now runs at 4×4), but it starts from everything the source learnt about
colours, shapes and the text. ``train.init_from`` of a ``base`` or
``upsample`` experiment uses this when the source has one level fewer, and
copies the parameters unchanged when the configs agree. A target that adds
``coord_channels`` gets them as zero-weight inputs of the first convolution.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Hashable, Tuple

import jax
import numpy as np

from glide_jax.hub.torch_layout import CheckpointMismatchError, flat_shapes
from glide_jax.config import ModelConfig, UNetConfig
from glide_jax.models.unet import init_params
from glide_jax.train.finetune import FIRST_CONV

_BLOCK = re.compile(r"^(input_blocks|output_blocks)_(\d+)_(\d+)$")
# Fields that may differ between a model and its warm-started continuation (same weights apply).
_FREE_FIELDS = ("dropout", "dtype", "remat")


def block_roles(cfg: UNetConfig) -> Dict[Hashable, Tuple[str, int]]:
    """What each numbered U-Net block does: role -> (kind, index).

    Roles are ``("stem",)``, ``("in", level, k)``, ``("down", level)`` (the block
    after ``level``) and ``("out", level, i)``, mirroring the loops of
    :class:`glide_jax.models.unet.UNetTorso`.
    """
    roles: Dict[Hashable, Tuple[str, int]] = {("stem",): ("input_blocks", 0)}
    block = 1
    levels = len(cfg.channel_mult)
    for level in range(levels):
        for k in range(cfg.num_res_blocks):
            roles[("in", level, k)] = ("input_blocks", block)
            block += 1
        if level != levels - 1:
            roles[("down", level)] = ("input_blocks", block)
            block += 1
    block = 0
    for level in reversed(range(levels)):
        for i in range(cfg.num_res_blocks + 1):
            roles[("out", level, i)] = ("output_blocks", block)
            block += 1
    return roles


def _unet(cfg: ModelConfig) -> UNetConfig:
    return dataclasses.replace(cfg.unet, **{f: getattr(UNetConfig(), f) for f in _FREE_FIELDS})


def levels_added(source: ModelConfig, target: ModelConfig) -> int:
    """0 when ``target`` continues ``source`` as is, 1 when it is ``source`` deepened by one level.

    Raises ValueError naming the difference for anything else.
    """
    if source.diffusion != target.diffusion:
        raise ValueError(f"diffusion settings differ: {source.diffusion} vs {target.diffusion}")
    s, t = _unet(source), _unet(target)
    if s.coord_channels and not t.coord_channels:
        raise ValueError("the source U-Net reads coordinate channels and the target does not (coord_channels)")
    s = dataclasses.replace(s, coord_channels=t.coord_channels)
    if s == t:
        return 0
    deeper = dataclasses.replace(
        s,
        channel_mult=s.channel_mult + (s.channel_mult[-1],),
        attention_resolutions=t.attention_resolutions,
    )
    coarsest = s.image_size // 2 ** len(s.channel_mult)
    kept = tuple(r for r in t.attention_resolutions if r != coarsest)
    if deeper != t or set(kept) != set(s.attention_resolutions):
        diff = [f"{f.name}: {getattr(s, f.name)!r} vs {getattr(t, f.name)!r}"
                for f in dataclasses.fields(UNetConfig) if getattr(s, f.name) != getattr(t, f.name)]
        raise ValueError("the target U-Net is neither the source's config nor the source deepened by one level "
                         "(channel_mult with its last entry repeated, the same attention plus optionally "
                         f"{coarsest}): " + "; ".join(diff))
    if len(s.channel_mult) < 2 or s.channel_mult[-1] != s.channel_mult[-2]:
        raise ValueError(f"deepening copies the source's coarsest level and last downsampling block, so its two "
                         f"coarsest levels need the same width; channel_mult is {s.channel_mult}")
    return 1


def _source_role(role: Hashable, source_levels: int) -> Hashable:
    """The source block a deepened target block starts from."""
    last = source_levels - 1
    if role[0] == "in" and role[1] == last + 1:
        return ("in", last, role[2])
    if role == ("down", last):
        return ("down", last - 1)
    if role[0] == "out" and role[1] == last + 1:
        return ("out", last, role[2])
    return role


def deepen_unet_params(unet: Dict[str, Any], source: UNetConfig, target: UNetConfig) -> Dict[str, Any]:
    """Map a source U-Net parameter dict onto the block names of ``target`` (one level deeper)."""
    src_roles = block_roles(source)
    name_of = {}
    for role, (kind, idx) in block_roles(target).items():
        src_kind, src_idx = src_roles[_source_role(role, len(source.channel_mult))]
        name_of[(kind, idx)] = (src_kind, src_idx)
    by_block: Dict[Tuple[str, int], Dict[str, Any]] = {}
    out = {}
    for name, value in unet.items():
        m = _BLOCK.match(name)
        if m:
            by_block.setdefault((m[1], int(m[2])), {})[m[3]] = value
        else:
            out[name] = value
    for (kind, idx), (src_kind, src_idx) in name_of.items():
        for layer, value in by_block[(src_kind, src_idx)].items():
            out[f"{kind}_{idx}_{layer}"] = jax.tree.map(np.array, value)
    return out


def add_coordinate_inputs(unet: Dict[str, Any]) -> Dict[str, Any]:
    """The U-Net parameters with two zero input channels appended to the first convolution, so a model
    given ``coord_channels`` computes at step 0 exactly what its source did."""
    conv = dict(unet[FIRST_CONV])
    kernel = np.asarray(conv["kernel"])
    conv["kernel"] = np.concatenate([kernel, np.zeros(kernel.shape[:2] + (2,) + kernel.shape[3:], kernel.dtype)], 2)
    return dict(unet, **{FIRST_CONV: conv})


def _check_shapes(params: Dict[str, Any], target: ModelConfig) -> None:
    want = flat_shapes(jax.eval_shape(lambda k: init_params(target.unet, k)["params"], jax.random.key(0)))
    got = flat_shapes(params)
    misshaped = [f"{'/'.join(k)}: warm start {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got))
                 if want[k] != got[k]]
    missing, unexpected = ("/".join(k) for k in set(want) - set(got)), ("/".join(k) for k in set(got) - set(want))
    if set(want) != set(got) or misshaped:
        raise CheckpointMismatchError("warm start", missing, unexpected, misshaped)


def warm_start_params(source_params: Dict[str, Any], source: ModelConfig, target: ModelConfig) -> Dict[str, Any]:
    """The target's parameter tree (no ``{"params": }`` wrapper) from a trained source's."""
    tree = jax.tree.map(np.asarray, source_params.get("params", source_params))
    if levels_added(source, target):
        tree = dict(tree, unet=deepen_unet_params(dict(tree["unet"]), source.unet, target.unet))
    if target.unet.coord_channels and not source.unet.coord_channels:
        tree = dict(tree, unet=add_coordinate_inputs(dict(tree["unet"])))
    _check_shapes(tree, target)
    return tree


def load_warm_start(init_from: str, target: ModelConfig) -> Dict[str, Any]:
    """Parameters to start a base or upsampler run of ``target`` from the model at ``init_from``."""
    from glide_jax.hub.model_dir import load_model

    source, params = load_model(str(init_from))
    if not isinstance(source, ModelConfig):
        raise ValueError(f"{init_from} holds a {type(source).__name__}, not a diffusion model")
    if source.unet.inpaint != target.unet.inpaint or source.unet.super_res != target.unet.super_res:
        raise ValueError(f"{init_from} is a {source.kind} model; this run trains a {target.kind} model")
    return warm_start_params(params, source, target)
