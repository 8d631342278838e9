"""Parity of the diffusion maths with a stub model: schedules, single reverse steps and training losses.

Groups of a diffusion fixture (``diffusion/*.npz``) checked here, found by the
arrays present and driven by the json ``settings`` (never by built-in values):

* ``betas/<schedule>`` and ``respace/<spec>`` (the spec is parsed from the
  name; the number of steps is the global ``diffusion_steps``);
* step groups: every prefix with ``x``, ``model_output``, ``t`` and
  ``timestep_map`` (``full/``, ``s27/``, ...): q_sample, the posterior,
  p_mean_variance with and without clipping, p_sample and every stored DDIM
  eta, with a stub model that returns the stored output. The schedule is the
  group's base schedule respaced to its own ``timestep_map`` (see
  ``parity.schedules``); the stored ``betas`` are compared too;
* loss groups: every prefix with ``model_output``, ``x_start``, ``t``,
  ``noise`` and ``<loss_type>/mse`` (``loss/``, ``loss100/``, ...), any T and
  both loss types.

Rows whose name ends in ``:scaled`` use ``compare_scaled``: the ``*_noclip``
arrays reach 1e4..1e5 near t=T and the vb loss term ~70 bits/dim, so their
first column is absolute below 1 and relative above.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion.gaussian import p_mean_variance, q_posterior, q_sample
from glide_jax.diffusion.losses import training_losses
from glide_jax.diffusion.samplers import ddim_sample, p_sample
from glide_jax.diffusion.schedule import beta_schedule, make_schedule
from glide_jax.parity.fixtures import Errors, compare, compare_exact, compare_scaled, nchw, nhwc, prefixed
from glide_jax.parity.schedules import (
    diffusion_steps,
    matching_schedule,
    respaced_betas,
    respacing_error,
    schedule_for_map,
    schedule_name,
)


def _compare_layout(got, want, scaled: bool = False):
    """Compare a glide_jax result with a reference array, moving image channels back to NCHW first."""
    got = nchw(got) if np.ndim(got) == 4 else np.asarray(got)
    return compare_scaled(got, want) if scaled else compare(got, want)


def _eta(tag: str) -> float:
    """``eta05`` -> 0.5, ``eta0`` -> 0.0, ``eta1`` -> 1.0, ``eta025`` -> 0.25 (the fixture's naming)."""
    digits = tag[len("eta"):]
    return float("0." + digits[1:]) if digits.startswith("0") and len(digits) > 1 else float(digits)


def check_schedule_tables(arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """``betas/<schedule>`` and ``respace/<spec>`` tables."""
    errors: Errors = {}
    for name in sorted(arrays):
        if name.startswith("betas/"):
            table = arrays[name]
            errors[name] = compare_exact(beta_schedule(name[len("betas/"):], len(table)), table)
        elif name.startswith("respace/"):
            errors[name] = respacing_error(diffusion_steps(settings), name[len("respace/"):], arrays[name])
    return errors


def check_step_group(group: str, arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """q_sample, posterior, p_mean_variance (clipped and not), p_sample and every DDIM eta of a step group."""
    section = settings.get("step_level", {}).get(group, {})
    steps = diffusion_steps(settings, section)
    a = prefixed(arrays, group + "/")
    name = matching_schedule(schedule_name(settings, section), steps, a["timestep_map"], a.get("betas"))
    s = schedule_for_map(name, steps, a["timestep_map"])
    errors: Errors = {}
    if "betas" in a:
        errors[f"{group}/betas"] = compare_exact(respaced_betas(name, steps, a["timestep_map"])[0], a["betas"])
    if "timestep_respacing" in section:
        errors[f"{group}/timestep_map"] = respacing_error(steps, section["timestep_respacing"], a["timestep_map"])
    t = jnp.asarray(a["t"], jnp.int32)
    x = jnp.asarray(nhwc(a["x"]))
    out = jnp.asarray(nhwc(a["model_output"]))
    seen_t_model = []

    def stub(x_, t_model):
        seen_t_model.append(np.asarray(t_model))
        return out

    got: Dict[str, object] = {}
    if "x_start" in a:
        x0 = jnp.asarray(nhwc(a["x_start"]))
        if "noise" in a:
            got["q_sample"] = q_sample(s, x0, t, jnp.asarray(nhwc(a["noise"])))
        got["q_posterior_mean"], got["q_posterior_variance"], got["q_posterior_log_variance"] = q_posterior(s, x0, x, t)
    clipped = p_mean_variance(s, out, x, t, clip_denoised=True)
    got.update(p_mean=clipped.mean, p_variance=clipped.variance, p_log_variance=clipped.log_variance,
               p_pred_xstart=clipped.pred_xstart)
    raw = p_mean_variance(s, out, x, t, clip_denoised=False)
    got.update(p_mean_noclip=raw.mean, p_pred_xstart_noclip=raw.pred_xstart,
               p_variance_noclip=raw.variance, p_log_variance_noclip=raw.log_variance)
    if "p_sample_noise" in a:
        got["p_sample"], got["p_sample_pred_xstart"] = p_sample(s, stub, x, t, jnp.asarray(nhwc(a["p_sample_noise"])))
    for key in a:
        tag = re.fullmatch(r"ddim_sample_(eta\d+)", key)
        if tag and f"{key}_noise" in a:
            got[key], got[f"{key}_pred_xstart"] = ddim_sample(
                s, stub, x, t, jnp.asarray(nhwc(a[f"{key}_noise"])), eta=_eta(tag.group(1)))
    for key, value in got.items():
        if key in a:
            scaled = key.endswith("_noclip")
            errors[f"{group}/{key}" + (":scaled" if scaled else "")] = _compare_layout(value, a[key], scaled)
    if "t_model" in a:
        t_model = seen_t_model[-1] if seen_t_model else np.asarray(s.timestep_map)[np.asarray(a["t"])]
        errors[f"{group}/t_model"] = compare_exact(t_model, a["t_model"])
    return errors


def _loss_section(group: str, settings: Mapping) -> dict:
    """A loss group's settings; the schedule may only be named inside the recorded reference call."""
    losses = settings.get("training_losses", {})
    section = dict(losses.get(group, {}))
    named = re.search(r"get_named_beta_schedule\('(\w+)'", losses.get("code", ""))
    if named and "noise_schedule" not in section:
        section["noise_schedule"] = named.group(1)
    if "T" not in section and re.fullmatch(r"loss\d+", group):
        section["T"] = int(group[len("loss"):])
    return section


def check_loss_group(group: str, arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """guided-diffusion ``training_losses`` (EPSILON, LEARNED_RANGE) for every loss type stored under ``group``."""
    section = _loss_section(group, settings)
    s = make_schedule(section.get("noise_schedule", "cosine"), int(section.get("T", 1000)))
    a = prefixed(arrays, group + "/")
    out = jnp.asarray(nhwc(a["model_output"]))
    seen = []

    def stub(x_t, t_model):
        seen.append((x_t, t_model))
        return out

    errors: Errors = {}
    loss_types = sorted({k.split("/")[0] for k in a if k.count("/") == 1 and k.endswith("/mse")})
    for loss_type in loss_types:
        terms = training_losses(s, stub, jnp.asarray(nhwc(a["x_start"])), jnp.asarray(a["t"], jnp.int32),
                                jnp.asarray(nhwc(a["noise"])), loss_type=loss_type)
        for k, v in terms.items():
            if f"{loss_type}/{k}" in a:
                errors[f"{group}/{loss_type}/{k}:scaled"] = compare_scaled(np.asarray(v), a[f"{loss_type}/{k}"])
    if seen and "x_t" in a:
        errors[f"{group}/x_t"] = _compare_layout(seen[0][0], a["x_t"])
    if seen and "t_model" in a:
        errors[f"{group}/t_model"] = compare_exact(np.asarray(seen[0][1]), a["t_model"])
    return errors


def groups_with(arrays: Mapping[str, np.ndarray], members: Sequence[str]) -> List[str]:
    """Every name prefix ``p`` for which all ``p/<member>`` arrays exist."""
    prefixes = sorted({k.rsplit("/", 1)[0] for k in arrays if "/" in k})
    return [p for p in prefixes if all(f"{p}/{m}" in arrays for m in members)]


def loss_groups(arrays: Mapping[str, np.ndarray]) -> List[str]:
    return [p for p in groups_with(arrays, ("model_output", "x_start", "t", "noise"))
            if any(k.startswith(p + "/") and k.endswith("/mse") and k.count("/") == p.count("/") + 2 for k in arrays)]


def step_groups(arrays: Mapping[str, np.ndarray]) -> List[str]:
    losses = set(loss_groups(arrays))
    return [p for p in groups_with(arrays, ("x", "model_output", "t", "timestep_map")) if p not in losses]


def check_diffusion_maths(arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """Every schedule table, step group and loss group of a diffusion fixture."""
    errors = check_schedule_tables(arrays, settings)
    for group in step_groups(arrays):
        errors.update(check_step_group(group, arrays, settings))
    for group in loss_groups(arrays):
        errors.update(check_loss_group(group, arrays, settings))
    return errors
