"""Starting the inpainting fine-tune from a trained base or upsampler, as the GLIDE paper does.

GLIDE's inpainting models are the text-to-image models fine-tuned with four
extra input channels: the masked image (3) and the mask (1). The first
convolution ``input_blocks_0_0`` therefore grows from ``[x, (low_res_up)]`` to
``[x, image * mask, mask, (low_res_up)]`` input channels; the new channels'
weights start at zero, so at step 0 the inpainting model computes exactly what
the model it came from computes, and every other parameter is copied as is.

The source may be a training workdir (its EMA weights), a model directory
written by ``tools.convert_checkpoint``, a released checkpoint name (``base``,
``upsample``), an OpenAI ``.pt`` file, or a ``.npz`` of a PyTorch state dict
(keys optionally prefixed ``state/``, as in the reference fixtures).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Tuple

import jax
import numpy as np

from glide_jax.config import ModelConfig

FIRST_CONV = "input_blocks_0_0"
# Fields that may legitimately differ between the source model and its inpainting fine-tune.
_FREE_FIELDS = ("inpaint", "dropout", "dtype", "remat")


def source_config(target: ModelConfig) -> ModelConfig:
    """The non-inpainting model an inpainting ``target`` is fine-tuned from."""
    return dataclasses.replace(target, unet=dataclasses.replace(target.unet, inpaint=False))


def _read_npz_state(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if any(k.startswith("state/") for k in arrays):
        arrays = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    return arrays


def load_source(init_from: str, target: ModelConfig) -> Tuple[ModelConfig, Dict[str, Any]]:
    """``(source_config, {"params": ...})`` of the model to fine-tune."""
    path = Path(init_from).expanduser()
    if path.is_file() and path.suffix in (".pt", ".npz"):
        from glide_jax.hub.convert import convert_state, read_state

        cfg = source_config(target)
        state = read_state(path) if path.suffix == ".pt" else _read_npz_state(path)
        return cfg, convert_state(cfg, {"model": state})
    from glide_jax.hub.model_dir import load_model

    cfg, params = load_model(str(init_from))
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"{init_from} holds a {type(cfg).__name__}, not a diffusion model")
    return cfg, params


def check_compatible(source: ModelConfig, target: ModelConfig) -> None:
    if source.unet.inpaint:
        raise ValueError("the source model is already an inpainting model; fine-tune it with the same config instead")
    free = {f: getattr(target.unet, f) for f in _FREE_FIELDS}
    if dataclasses.replace(source.unet, **free) != target.unet:
        diff = [
            f"{f.name}: {getattr(source.unet, f.name)!r} vs {getattr(target.unet, f.name)!r}"
            for f in dataclasses.fields(target.unet)
            if f.name not in _FREE_FIELDS and getattr(source.unet, f.name) != getattr(target.unet, f.name)
        ]
        raise ValueError("source and inpainting U-Nets differ beyond the input channels: " + "; ".join(diff))
    if source.low_res_size != target.low_res_size:
        raise ValueError(f"low_res_size differs: {source.low_res_size} vs {target.low_res_size}")


def widen_first_conv(kernel: np.ndarray, in_channels: int, super_res: bool, coords: bool = False) -> np.ndarray:
    """``[kh, kw, c_in, c_out]`` kernel of ``[x, (low_res), (coords)]`` ->
    ``[x, image*mask, mask, (low_res), (coords)]``, the new input channels zero."""
    kernel = np.asarray(kernel)
    c = in_channels
    expected = c * (2 if super_res else 1) + (2 if coords else 0)
    if kernel.shape[2] != expected:
        raise ValueError(f"first conv has {kernel.shape[2]} input channels, expected {expected}")
    out = np.zeros(kernel.shape[:2] + (expected + c + 1,) + kernel.shape[3:], kernel.dtype)
    out[:, :, :c] = kernel[:, :, :c]
    out[:, :, 2 * c + 1:] = kernel[:, :, c:]
    return out


def inpaint_params_from(source_params: Dict[str, Any], source: ModelConfig, target: ModelConfig) -> Dict[str, Any]:
    """The target's parameter tree (no ``{"params": }`` wrapper): the source's with the first conv widened."""
    check_compatible(source, target)
    tree = source_params.get("params", source_params)
    tree = jax.tree.map(np.asarray, tree)
    unet = dict(tree["unet"])
    conv = dict(unet[FIRST_CONV])
    conv["kernel"] = widen_first_conv(conv["kernel"], target.unet.in_channels, target.unet.super_res,
                                      target.unet.coord_channels)
    unet[FIRST_CONV] = conv
    return dict(tree, unet=unet)


def load_inpaint_init(init_from: str, target: ModelConfig) -> Dict[str, Any]:
    """Parameters to start an inpainting fine-tune of ``target`` from ``init_from``."""
    if not target.unet.inpaint:
        raise ValueError("init_from widening is for inpainting models")
    source, params = load_source(init_from, target)
    return inpaint_params_from(params, source, target)
