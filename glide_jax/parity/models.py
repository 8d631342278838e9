"""Numerical parity against fixtures produced by OpenAI's PyTorch reference.

A fixture is ``X.npz`` (arrays in the reference's NCHW layout and torch weight
layouts) plus ``X.json`` (the exact configuration). ``check_fixture`` rebuilds
the model from the json, converts the stored state, runs it on the stored
inputs and returns the max abs and max relative error of every output, so any
configuration the reference accepts can be checked, not only the public ones.
Used by ``python -m tools.parity`` and by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Mapping, Tuple

import numpy as np

Errors = Dict[str, Tuple[float, float]]  # output name → (max abs error, max relative error)


def load_fixture(npz_path) -> Tuple[dict, Mapping[str, np.ndarray]]:
    npz_path = Path(npz_path)
    if npz_path.suffix != ".npz":
        npz_path = npz_path.with_suffix(".npz")
    meta_path = npz_path.with_suffix(".json")
    if not npz_path.exists():
        raise FileNotFoundError(f"fixture {npz_path} does not exist")
    if not meta_path.exists():
        raise FileNotFoundError(f"fixture {npz_path} has no configuration file {meta_path}")
    with open(meta_path) as f:
        meta = json.load(f)
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


def compare(got, want) -> Tuple[float, float]:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape mismatch: got {got.shape}, reference {want.shape}")
    diff = np.abs(got - want)
    rel = diff / np.maximum(np.abs(want), 1e-6)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def check_model(meta: dict, arrays: Mapping[str, np.ndarray]) -> Errors:
    """Parity of a GLIDE U-Net fixture (``models/*.npz``)."""
    import jax
    import jax.numpy as jnp

    from glide_jax.hub.convert_unet import unet_from_torch
    from glide_jax.config import UNetConfig
    from glide_jax.models import layers
    from glide_jax.models.unet import GlideUNet, resize_bilinear

    cfg = UNetConfig.from_reference(meta["create_model_kwargs"])
    params = unet_from_torch(prefixed(arrays, "state/"), cfg)
    model = GlideUNet(cfg)
    x = nhwc(arrays["in/x"])
    t = arrays["in/timesteps"].astype(np.int32)
    kwargs = {}
    if "in/low_res" in arrays:
        kwargs["low_res"] = nhwc(arrays["in/low_res"])
    if "in/inpaint_image" in arrays:
        kwargs["inpaint_image"] = nhwc(arrays["in/inpaint_image"])
        kwargs["inpaint_mask"] = nhwc(arrays["in/inpaint_mask"])
    tokens = mask = None
    if cfg.text.width:
        tokens = arrays["in/tokens"].astype(np.int32)
        mask = arrays["in/mask"].astype(bool)
    out = jax.jit(lambda p: model.apply(p, x, t, tokens, mask, **kwargs))(params)
    errors = {"model": compare(out, nhwc(arrays["out/model"]))}
    if "out/timestep_embedding" in arrays:
        sinus = layers.timestep_embedding(jnp.asarray(t), cfg.num_channels)
        errors["timestep_embedding"] = compare(sinus, arrays["out/timestep_embedding"])
        if "out/time_emb" in arrays:
            p = params["params"]["unet"]
            h = sinus @ p["time_embed_0"]["kernel"] + p["time_embed_0"]["bias"]
            h = jax.nn.silu(h) @ p["time_embed_2"]["kernel"] + p["time_embed_2"]["bias"]
            errors["time_emb"] = compare(h, arrays["out/time_emb"])
    if cfg.text.width and "out/xf_proj" in arrays:
        xf_proj, xf_out = model.apply(params, tokens, mask, method=GlideUNet.encode_text)
        errors["xf_proj"] = compare(xf_proj, arrays["out/xf_proj"])
        errors["xf_out"] = compare(np.transpose(np.asarray(xf_out), (0, 2, 1)), arrays["out/xf_out"])
    if "out/low_res_upsampled" in arrays:
        up = resize_bilinear(jnp.asarray(kwargs["low_res"]), cfg.image_size)
        errors["low_res_upsampled"] = compare(up, nhwc(arrays["out/low_res_upsampled"]))
    return errors


def check_clip(meta: dict, arrays: Mapping[str, np.ndarray]) -> Errors:
    """Parity of a noise-aware CLIP fixture (``clip/*.npz``): raw and normalised embeddings, guidance gradient."""
    import jax

    from glide_jax.hub.convert_clip import convert_clip
    from glide_jax.config import ClipConfig
    from glide_jax.models import clip as C

    cfg = ClipConfig.from_reference(meta["config_yaml"])
    params = convert_clip(cfg, prefixed(arrays, "state/image/"), prefixed(arrays, "state/text/"),
                          arrays.get("state/logit_scale"))
    model = C.ClipModel(cfg)
    images, t = nhwc(arrays["in/images"]), arrays["in/t"].astype(np.int32)
    tokens, lens = arrays["in/tokens"].astype(np.int32), arrays["in/lens"].astype(np.int32)
    variables = {"params": params}
    errors = {
        "image_z": compare(model.apply(variables, images, t, method=C.ClipModel.encode_image), arrays["out/image_z"]),
        "text_z": compare(model.apply(variables, tokens, lens, method=C.ClipModel.encode_text), arrays["out/text_z"]),
        "image_emb": compare(C.image_embeddings(model, params, images, t), arrays["out/image_emb"]),
        "text_emb": compare(C.text_embeddings(model, params, tokens, lens), arrays["out/text_emb"]),
    }
    if "out/cond_grad" in arrays:
        text_emb = C.text_embeddings(model, params, arrays["in/cond_tokens"].astype(np.int32),
                                     arrays["in/cond_lens"].astype(np.int32))
        grad = jax.jit(lambda x, tt: C.clip_guidance_grad(model, params, x, tt, text_emb,
                                                          meta.get("cond_grad_scale", 1.0)))(
            nhwc(arrays["in/cond_x"]), arrays["in/cond_t"].astype(np.int32))
        errors["cond_grad"] = compare(grad, nhwc(arrays["out/cond_grad"]))
    return errors


def fixture_kind(meta: dict) -> str:
    if "create_model_kwargs" in meta:
        return "model"
    if "config_yaml" in meta:
        return "clip"
    if "losses_reference" in meta or "respace" in json.dumps(meta.get("array_groups", {})):
        return "diffusion"
    raise ValueError("unrecognised fixture: its json has neither create_model_kwargs nor config_yaml nor diffusion settings")


def _checkers() -> Dict[str, Callable[..., Errors]]:
    table: Dict[str, Callable[..., Errors]] = {
        "model": lambda meta, arrays, path: check_model(meta, arrays),
        "clip": lambda meta, arrays, path: check_clip(meta, arrays),
    }
    try:
        from glide_jax.parity.diffusion import check_diffusion

        table["diffusion"] = check_diffusion
    except ImportError:
        pass
    return table


def check_fixture(npz_path) -> Errors:
    """Run the right parity check for a fixture file and return its errors."""
    meta, arrays = load_fixture(npz_path)
    kind = fixture_kind(meta)
    checkers = _checkers()
    if kind not in checkers:
        raise ValueError(f"no parity check for {kind} fixtures is available")
    return checkers[kind](meta, arrays, Path(npz_path))
