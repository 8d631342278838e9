"""Parity of whole sampling loops and of one CLIP-guided step, with the small reference networks.

Each ``loop/<group>`` of a diffusion fixture is re-run with the networks read
from ``<root>/models/*.npz`` (and ``<root>/clip/*.npz``), where ``<root>`` is
the folder holding the fixture's ``diffusion/`` folder. What each loop used
(model file, guidance scale, respacing, eta, sampler, denoised_fn) is read
from the json settings; the schedule is the base schedule respaced to the
loop's stored ``timestep_map``, and the spec of the settings is checked
against that map.

Reported per loop group ``g`` (names start with ``loop/`` so that
``tools.parity --loop-atol`` applies):

* ``loop/g`` - final sample of the compiled loop from the recorded initial
  noise and per-step noises (``RecordedNoise``); ``loop/g_steps`` - worst step
  of the same ``sample_trajectory`` run;
* ``loop/g_steps_tf`` - teacher forced: step k starts from the reference's
  sample after step k-1 (with its recorded noise), worst over steps;
* ``loop/g_timestep_map`` / ``loop/g_t_model`` - exact integer checks;
* ``steps_tf/g:cond`` - the teacher-forced error in model-output units.

Conditioning. Near t=T a step is ill-conditioned: where the x_0 prediction is
not clipped, an error in the model's eps moves x_0 by ``sqrt(1/alpha_bar - 1)``
(2e4 at t=999 of the cosine schedule) times that error. The reference itself
moves by 3e-4..3e-3 on such steps when only its thread count or conv kernels
change. Rows marked ``:cond`` therefore divide each batch row's error by
``max(1, |d output / d eps|)`` (``sensitivity``); at small t this is the plain
absolute error. They hold at the default ``--atol``; the plain rows of loops
starting near t=T may need ``--loop-atol``. (The step maths at t=T is checked
exactly by the step groups of ``parity.diffusion`` with a stub model.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion.gaussian import p_mean_variance
from glide_jax.diffusion.guidance import classifier_free_guidance, clip_guidance, inpaint_denoised_fn
from glide_jax.diffusion.noise import RecordedNoise
from glide_jax.diffusion.samplers import ddim_sample, p_sample, sample_trajectory
from glide_jax.parity.fixtures import Errors, compare, compare_conditioned, compare_exact, nhwc, prefixed
from glide_jax.parity.networks import clip_fixture, fixture_file, unet_fixture
from glide_jax.parity.schedules import diffusion_steps, respacing_error, schedule_for_map, schedule_name
from glide_jax.families.unet import unet_model_fn
from glide_jax.families.noisy_clip import clip_grad_fn

# Which settings section describes each loop of the public format, and its sampler subsection.
_LOOP_SECTIONS = {
    "ddim_cfg": ("cfg_loops", "ddim"),
    "p_cfg": ("cfg_loops", "p_sample"),
    "inpaint_ddim": ("inpaint_loop", None),
}


def loop_settings(settings: Mapping, group: str) -> dict:
    """Merged settings of one loop: the shared section (e.g. ``cfg_loops``), then its sampler subsection."""
    section, sub = _LOOP_SECTIONS.get(group, ("inpaint_loop" if "inpaint" in group else "cfg_loops", None))
    base = settings.get(section, {})
    merged = {k: v for k, v in base.items() if not isinstance(v, dict)}
    if sub is not None:
        merged.update(base.get(sub, {}))
    merged.setdefault("inpaint", "inpaint" in group or "denoised_fn" in merged)
    fn = str(merged.get("fn", ""))
    merged.setdefault("sampler", "ddim" if ("ddim" in fn or (not fn and "ddim" in group)) else "ddpm")
    return merged


def _first(arrays, *keys):
    for k in keys:
        if k in arrays:
            return arrays[k]
    raise KeyError(f"none of {keys} in the fixture")


@functools.partial(jax.jit, static_argnames=("sampler", "clip_denoised"))
def sample_step(s, model_fn, denoised_fn, x, t, noise, eta, sampler, clip_denoised):
    """One jitted ``p_sample`` (``sampler="ddpm"``) or ``ddim_sample`` step; returns the sample.

    The callables are pytree arguments, so one compilation serves every step and fixture of a shape.
    """
    if sampler == "ddpm":
        return p_sample(s, model_fn, x, t, noise, clip_denoised=clip_denoised, denoised_fn=denoised_fn)[0]
    return ddim_sample(s, model_fn, x, t, noise, eta=eta, clip_denoised=clip_denoised, denoised_fn=denoised_fn)[0]


def sensitivity(s, t, kind: str) -> np.ndarray:
    """Per-row ``max(1, |d out / d eps|)`` (shape ``[B, 1, 1, 1]``) of a step output at indices ``t``.

    ``sqrt(1/ab - 1)`` for x_0 (``kind="x0"``), times ``posterior_mean_coef1``
    for the ancestral mean and sample (``"ddpm"``), times ``sqrt(ab_prev)`` for
    DDIM (``"ddim"``).
    """
    t = np.asarray(t)
    amplification = np.asarray(s.sqrt_recipm1_alphas_cumprod, np.float64)[t]
    if kind == "ddpm":
        amplification = amplification * np.asarray(s.posterior_mean_coef1, np.float64)[t]
    elif kind == "ddim":
        amplification = amplification * np.sqrt(np.asarray(s.alphas_cumprod_prev, np.float64)[t])
    return np.maximum(amplification, 1.0).reshape(-1, 1, 1, 1)


def loop_inputs(arrays: Mapping[str, np.ndarray], settings: Mapping, root: Path, group: str):
    """Everything needed to re-run ``loop/<group>``: schedule, guided model_fn, denoised_fn, x_T,
    the recorded per-step noises ``[steps, *x_T.shape]`` and the loop's settings."""
    opts = loop_settings(settings, group)
    p = f"loop/{group}"
    default_model = "models/inpaint.npz" if opts["inpaint"] else "models/text2im.npz"
    config, params = unet_fixture(fixture_file(root, opts.get("model", ""), "models", default_model))
    s = schedule_for_map(schedule_name(settings, opts), diffusion_steps(settings, opts), arrays[f"{p}_timestep_map"])
    denoised_fn, conditioning = None, {}
    if opts["inpaint"]:
        tokens, mask = arrays["loop/inpaint_tokens"], arrays["loop/inpaint_token_mask"]
        image, image_mask = nhwc(arrays["loop/inpaint_image"]), nhwc(arrays["loop/inpaint_mask"])
        conditioning = dict(inpaint_image=image, inpaint_mask=image_mask)
        denoised_fn = inpaint_denoised_fn(image, image_mask)
    else:
        tokens, mask = arrays["loop/tokens"], arrays["loop/mask"]
    model_fn = unet_model_fn(config, params, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, bool), **conditioning)
    model_fn = classifier_free_guidance(model_fn, float(opts.get("guidance_scale", 3.0)))
    x_T = jnp.asarray(nhwc(_first(arrays, f"{p}_noise", f"{p}_noise_init")))
    noises = jnp.asarray(nhwc(_first(arrays, f"{p}_step_noises", f"{p}_noises")))
    return s, model_fn, denoised_fn, x_T, noises, opts


def check_loop(arrays: Mapping[str, np.ndarray], settings: Mapping, root: Path, group: str) -> Errors:
    """Teacher-forced steps and the whole compiled loop of ``loop/<group>``; see the module docstring."""
    s, model_fn, denoised_fn, x_T, noises, opts = loop_inputs(arrays, settings, root, group)
    p = f"loop/{group}"
    errors: Errors = {}
    if "timestep_respacing" in opts:
        errors[f"{p}_timestep_map"] = respacing_error(diffusion_steps(settings, opts), opts["timestep_respacing"],
                                                      arrays[f"{p}_timestep_map"])
    if f"{p}_t_model" in arrays:
        errors[f"{p}_t_model"] = compare_exact(np.asarray(s.timestep_map)[::-1], arrays[f"{p}_t_model"])
    want = nhwc(arrays[f"{p}_steps"])
    sampler, eta = opts["sampler"], jnp.asarray(float(opts.get("eta", 0.0)), jnp.float32)
    clip_denoised = bool(opts.get("clip_denoised", True))
    n = s.num_timesteps
    forced, forced_cond = [], []
    for k in range(n):
        x_in = x_T if k == 0 else jnp.asarray(want[k - 1])
        t = jnp.full((x_in.shape[0],), n - 1 - k, jnp.int32)
        out = sample_step(s, model_fn, denoised_fn, x_in, t, noises[k], eta, sampler, clip_denoised)
        forced.append(compare(out, want[k]))
        forced_cond.append(compare_conditioned(out, want[k], sensitivity(s, t, sampler))[0])
    errors[f"{p}_steps_tf"] = (max(e[0] for e in forced), max(e[1] for e in forced))
    errors[f"steps_tf/{group}:cond"] = (max(forced_cond), errors[f"{p}_steps_tf"][1])
    loop_options = dict(sampler=sampler, eta=eta, clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    # One compiled scan gives every step; its last is what sample_loop returns (the same scan body,
    # equal to 1e-6 in tests/test_diffusion_samplers.py), so a second compilation would add nothing.
    steps = sample_trajectory(s, model_fn, x_T, RecordedNoise(noises), **loop_options)
    errors[p] = compare(steps[-1], nhwc(arrays[p]))
    errors[f"{p}_steps"] = compare(steps, want)
    return errors


def loop_groups(arrays: Mapping[str, np.ndarray]) -> List[str]:
    return sorted(k[len("loop/"):] for k in arrays if k.startswith("loop/") and f"{k}_steps" in arrays)


def check_loops(arrays: Mapping[str, np.ndarray], settings: Mapping, root: Path) -> Errors:
    errors: Errors = {}
    for group in loop_groups(arrays):
        errors.update(check_loop(arrays, settings, root, group))
    return errors


@jax.jit
def _clip_guided_step(s, model_fn, cond_fn, x, t, noise):
    t_model = jnp.take(s.timestep_map, t)
    unguided = p_mean_variance(s, model_fn(x, t_model), x, t)
    sample, x0 = p_sample(s, model_fn, x, t, noise, cond_fn=cond_fn)
    return dict(grad=cond_fn(x, t_model), mean_unguided=unguided.mean, variance=unguided.variance,
                pred_xstart=x0, sample=sample)


def check_clip_guided_step(arrays: Mapping[str, np.ndarray], settings: Mapping, root: Path) -> Errors:
    """One CLIP-guided ``p_sample`` (``clipguide/*``) with the recorded noise."""
    opts = settings.get("clip_guided_step", {})
    a = prefixed(arrays, "clipguide/")
    config, params = unet_fixture(fixture_file(root, opts.get("model", ""), "models", "models/text2im.npz"))
    clip_config, clip_params = clip_fixture(fixture_file(root, opts.get("model", ""), "clip", "clip/clip.npz"))
    steps = diffusion_steps(settings, opts)
    s = schedule_for_map(schedule_name(settings, opts), steps, a["timestep_map"])
    errors: Errors = {}
    if "timestep_respacing" in opts:
        errors["clipguide/timestep_map"] = respacing_error(steps, opts["timestep_respacing"], a["timestep_map"])
    t = jnp.asarray(a["t"], jnp.int32)
    t_model = np.asarray(s.timestep_map)[np.asarray(a["t"])]
    for k in ("t_model", "t_clip"):
        if k in a:
            errors[f"clipguide/{k}"] = compare_exact(t_model, a[k])
    model_fn = unet_model_fn(config, params, jnp.asarray(a["tokens"], jnp.int32), jnp.asarray(a["mask"], bool))
    clip_grad = clip_grad_fn(clip_config, clip_params, jnp.asarray(a["clip_tokens"], jnp.int32),
                             jnp.asarray(a["clip_lens"], jnp.int32))
    cond_fn = clip_guidance(clip_grad, float(opts.get("grad_scale", 1.0)))
    got = _clip_guided_step(s, model_fn, cond_fn, jnp.asarray(nhwc(a["x"])), t, jnp.asarray(nhwc(a["noise"])))
    amplified = dict(pred_xstart="x0", mean_unguided="ddpm", sample="ddpm")  # x_0-derived: amplified near t=T
    for k, v in got.items():
        if k in amplified and k in a:
            errors[f"clipguide/{k}:cond"] = compare_conditioned(v, nhwc(a[k]), sensitivity(s, a["t"], amplified[k]))
        elif k in a:
            errors[f"clipguide/{k}"] = compare(v, nhwc(a[k]))
    return errors
