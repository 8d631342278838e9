"""Parity of the networks: a U-Net fixture (``models/*.npz``) and a noise-aware CLIP fixture (``clip/*.npz``).

Each check rebuilds the network from the fixture's json (so any configuration
the reference accepts is covered, not only the released ones), converts the
stored torch state, runs it on the stored inputs and compares every stored
output, intermediate ones included where the fixture has them.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.models import clip as clip_lib
from glide_jax.models import layers
from glide_jax.models.unet import GlideUNet, resize_bilinear
from glide_jax.parity.fixtures import Errors, compare, nhwc
from glide_jax.parity.networks import clip_from_fixture, unet_from_fixture


def check_unet(meta: dict, arrays: Mapping[str, np.ndarray]) -> Errors:
    """The U-Net's output, and where stored its timestep embedding, text encoding and upsampled low-res input."""
    config, params = unet_from_fixture(meta, arrays)
    model = GlideUNet(config)
    x = nhwc(arrays["in/x"])
    t = arrays["in/timesteps"].astype(np.int32)
    kwargs = {}
    if "in/low_res" in arrays:
        kwargs["low_res"] = nhwc(arrays["in/low_res"])
    if "in/inpaint_image" in arrays:
        kwargs["inpaint_image"] = nhwc(arrays["in/inpaint_image"])
        kwargs["inpaint_mask"] = nhwc(arrays["in/inpaint_mask"])
    tokens = mask = None
    if config.text.width:
        tokens = arrays["in/tokens"].astype(np.int32)
        mask = arrays["in/mask"].astype(bool)
    out = jax.jit(lambda p: model.apply(p, x, t, tokens, mask, **kwargs))(params)
    errors = {"model": compare(out, nhwc(arrays["out/model"]))}
    if "out/timestep_embedding" in arrays:
        sinusoids = layers.timestep_embedding(jnp.asarray(t), config.num_channels)
        errors["timestep_embedding"] = compare(sinusoids, arrays["out/timestep_embedding"])
        if "out/time_emb" in arrays:
            unet = params["params"]["unet"]
            h = sinusoids @ unet["time_embed_0"]["kernel"] + unet["time_embed_0"]["bias"]
            h = jax.nn.silu(h) @ unet["time_embed_2"]["kernel"] + unet["time_embed_2"]["bias"]
            errors["time_emb"] = compare(h, arrays["out/time_emb"])
    if config.text.width and "out/xf_proj" in arrays:
        xf_proj, xf_out = model.apply(params, tokens, mask, method=GlideUNet.encode_text)
        errors["xf_proj"] = compare(xf_proj, arrays["out/xf_proj"])
        errors["xf_out"] = compare(np.transpose(np.asarray(xf_out), (0, 2, 1)), arrays["out/xf_out"])
    if "out/low_res_upsampled" in arrays:
        upsampled = resize_bilinear(jnp.asarray(kwargs["low_res"]), config.image_size)
        errors["low_res_upsampled"] = compare(upsampled, nhwc(arrays["out/low_res_upsampled"]))
    return errors


def check_clip(meta: dict, arrays: Mapping[str, np.ndarray]) -> Errors:
    """Raw and normalised image/text embeddings and, where stored, the CLIP guidance gradient."""
    config, params = clip_from_fixture(meta, arrays)
    model = clip_lib.ClipModel(config)
    images, t = nhwc(arrays["in/images"]), arrays["in/t"].astype(np.int32)
    tokens, lens = arrays["in/tokens"].astype(np.int32), arrays["in/lens"].astype(np.int32)
    variables = {"params": params}
    errors = {
        "image_z": compare(model.apply(variables, images, t, method=clip_lib.ClipModel.encode_image),
                           arrays["out/image_z"]),
        "text_z": compare(model.apply(variables, tokens, lens, method=clip_lib.ClipModel.encode_text),
                          arrays["out/text_z"]),
        "image_emb": compare(clip_lib.image_embeddings(model, params, images, t), arrays["out/image_emb"]),
        "text_emb": compare(clip_lib.text_embeddings(model, params, tokens, lens), arrays["out/text_emb"]),
    }
    if "out/cond_grad" in arrays:
        text_emb = clip_lib.text_embeddings(model, params, arrays["in/cond_tokens"].astype(np.int32),
                                            arrays["in/cond_lens"].astype(np.int32))
        scale = meta.get("cond_grad_scale", 1.0)
        grad = jax.jit(lambda x, tt: clip_lib.clip_guidance_grad(model, params, x, tt, text_emb, scale))(
            nhwc(arrays["in/cond_x"]), arrays["in/cond_t"].astype(np.int32))
        errors["cond_grad"] = compare(grad, nhwc(arrays["out/cond_grad"]))
    return errors
