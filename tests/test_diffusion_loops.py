"""Whole sampling loops with the small reference U-Net and CLIP: classifier-free
guided DDIM and ancestral sampling, guided inpainting, and one CLIP-guided step.

Every loop is checked twice: teacher-forced (each step started from the
reference's previous sample, with its recorded noise), which isolates the step
maths from drift, and as a whole compiled loop, which may drift more (the README
measured up to 5e-5 between two PyTorch kernel choices).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture
from jax.tree_util import Partial

from glide_jax.checkpoints.convert_clip import convert_clip
from glide_jax.checkpoints.convert_unet import unet_from_torch
from glide_jax.config import ClipConfig, UNetConfig
from glide_jax.diffusion import (
    classifier_free_guidance,
    clip_guidance,
    ddim_sample,
    inpaint_denoised_fn,
    make_schedule,
    p_mean_variance,
    p_sample,
    sample_loop,
)
from glide_jax.nn.clip import ClipModel, clip_guidance_grad, text_embeddings
from glide_jax.nn.unet import GlideUNet
from glide_jax.parity import load_fixture, prefixed

STEP_TOL = 1e-4  # teacher-forced single steps
LOOP_TOL = 2e-4  # whole 10-step loops (fp32 drift through t=999 amplification)


def nhwc(a):
    return jnp.asarray(np.moveaxis(a, 1, -1))


@pytest.fixture(scope="module")
def ref():
    return np.load(require_fixture("diffusion/diffusion.npz"))


@functools.lru_cache(maxsize=None)
def unet(name):
    meta, arrays = load_fixture(require_fixture(f"models/{name}.npz"))
    cfg = UNetConfig.from_reference(meta["create_model_kwargs"])
    return GlideUNet(cfg), unet_from_torch(prefixed(arrays, "state/"), cfg)


def _text2im_eps(model, params, tokens, mask, x, t):
    return model.apply(params, x, t, tokens, mask)


def _inpaint_eps(model, params, tokens, mask, image, image_mask, x, t):
    return model.apply(params, x, t, tokens, mask, inpaint_image=image, inpaint_mask=image_mask)


@functools.lru_cache(maxsize=None)
def model_callable(name):
    # One function object per network, so its compiled loops are reused.
    model, _ = unet(name)
    return functools.partial(_inpaint_eps if name == "inpaint" else _text2im_eps, model)


def guided_inputs(ref, group):
    if group == "inpaint_ddim":
        _, params = unet("inpaint")
        image, mask = nhwc(ref["loop/inpaint_image"]), nhwc(ref["loop/inpaint_mask"])
        base = Partial(model_callable("inpaint"), params, jnp.asarray(ref["loop/inpaint_tokens"], jnp.int32),
                       jnp.asarray(ref["loop/inpaint_token_mask"]), image, mask)
        return classifier_free_guidance(base, 5.0), inpaint_denoised_fn(image, mask), "ddim10", "ddim"
    _, params = unet("text2im")
    base = Partial(model_callable("text2im"), params, jnp.asarray(ref["loop/tokens"], jnp.int32),
                   jnp.asarray(ref["loop/mask"]))
    spec, sampler = ("ddim10", "ddim") if group == "ddim_cfg" else ("10", "ddpm")
    return classifier_free_guidance(base, 3.0), None, spec, sampler


def recorded(ref, group):
    init = ref["loop/p_cfg_noise_init"] if group == "p_cfg" else ref[f"loop/{group}_noise"]
    noises = ref["loop/p_cfg_noises"] if group == "p_cfg" else ref[f"loop/{group}_step_noises"]
    return nhwc(init), jnp.asarray(np.moveaxis(noises, 2, -1)), np.moveaxis(ref[f"loop/{group}_steps"], 2, -1)


GROUPS = ["ddim_cfg", "p_cfg", "inpaint_ddim"]


@pytest.mark.parametrize("group", GROUPS)
def test_teacher_forced_steps(ref, group):
    model_fn, denoised_fn, spec, sampler = guided_inputs(ref, group)
    s = make_schedule("squaredcos_cap_v2", 1000, spec)
    np.testing.assert_array_equal(np.asarray(s.timestep_map), ref[f"loop/{group}_timestep_map"])
    np.testing.assert_array_equal(np.asarray(s.timestep_map)[::-1], ref[f"loop/{group}_t_model"])
    x_T, noises, want = recorded(ref, group)
    step = p_sample if sampler == "ddpm" else ddim_sample
    run = jax.jit(lambda fn, dn, x, t, noise: step(s, fn, x, t, noise, denoised_fn=dn))
    errs = []
    for k in range(s.num_timesteps):
        x_in = x_T if k == 0 else jnp.asarray(want[k - 1])
        t = jnp.full((x_in.shape[0],), s.num_timesteps - 1 - k, jnp.int32)
        out, _ = run(model_fn, denoised_fn, x_in, t, noises[k])
        errs.append(float(np.abs(np.asarray(out) - want[k]).max()))
    print(f"{group} teacher-forced max abs error per step: {['%.1e' % e for e in errs]}")
    assert max(errs) < STEP_TOL


@pytest.mark.parametrize("group", GROUPS)
def test_whole_loop(ref, group):
    model_fn, denoised_fn, spec, sampler = guided_inputs(ref, group)
    s = make_schedule("squaredcos_cap_v2", 1000, spec)
    x_T, noises, want = recorded(ref, group)
    final, steps = sample_loop(
        s, model_fn, sampler=sampler, x_T=x_T, noises=noises, denoised_fn=denoised_fn, return_steps=True
    )
    errs = np.abs(np.asarray(steps) - want).reshape(len(want), -1).max(axis=1)
    print(f"{group} whole-loop max abs error per step: {['%.1e' % e for e in errs]}")
    np.testing.assert_allclose(np.asarray(final), np.moveaxis(ref[f"loop/{group}"], 1, -1), atol=LOOP_TOL)
    assert errs.max() < LOOP_TOL
    if group == "inpaint_ddim":  # the known region is pasted in at every step, so it ends on the source
        keep = np.asarray(nhwc(ref["loop/inpaint_mask"])) > 0.5
        src = np.broadcast_to(np.asarray(nhwc(ref["loop/inpaint_image"])), keep.shape[:3] + (3,))
        k3 = np.broadcast_to(keep, src.shape)
        assert np.abs(np.asarray(final)[k3] - src[k3]).max() < 1e-3


def _clip_grad(model, params, text_emb, x, t):
    return clip_guidance_grad(model, params, x, t, text_emb)


def test_clip_guided_step(ref):
    meta, arrays = load_fixture(require_fixture("clip/clip.npz"))
    ccfg = ClipConfig.from_reference(meta["config_yaml"])
    cparams = convert_clip(ccfg, prefixed(arrays, "state/image/"), prefixed(arrays, "state/text/"),
                           arrays.get("state/logit_scale"))
    cmodel = ClipModel(ccfg)
    text_emb = text_embeddings(cmodel, cparams, jnp.asarray(ref["clipguide/clip_tokens"], jnp.int32),
                               jnp.asarray(ref["clipguide/clip_lens"], jnp.int32))
    cond_fn = clip_guidance(Partial(functools.partial(_clip_grad, cmodel), cparams, text_emb), 3.0)
    _, params = unet("text2im")
    model_fn = Partial(model_callable("text2im"), params, jnp.asarray(ref["clipguide/tokens"], jnp.int32),
                       jnp.asarray(ref["clipguide/mask"]))
    s = make_schedule("squaredcos_cap_v2", 1000, "100")
    x, t = nhwc(ref["clipguide/x"]), jnp.asarray(ref["clipguide/t"], jnp.int32)
    t_model = s.timestep_map[t]
    np.testing.assert_array_equal(np.asarray(t_model), ref["clipguide/t_clip"])

    def check(got, key, tol=STEP_TOL):
        err = float(np.abs(np.asarray(got) - np.moveaxis(ref[f"clipguide/{key}"], 1, -1)).max())
        print(f"clipguide/{key}: {err:.1e}")
        assert err < tol, key

    @jax.jit
    def step(m, c, x_, noise):  # one compilation for every quantity compared
        mv = p_mean_variance(s, m(x_, t_model), x_, t)
        sample, x0 = p_sample(s, m, x_, t, noise, cond_fn=c)
        return c(x_, t_model), mv.mean, mv.variance, x0, sample

    got = step(model_fn, cond_fn, x, nhwc(ref["clipguide/noise"]))
    for value, key in zip(got, ("grad", "mean_unguided", "variance", "pred_xstart", "sample")):
        check(value, key)
