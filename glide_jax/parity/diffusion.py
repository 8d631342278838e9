"""Parity of a diffusion fixture (``diffusion/*.npz``) against the PyTorch reference.

``check_diffusion(meta, arrays, path)`` reproduces every array group it finds,
driven by the arrays present and the json ``settings`` (never by the public
values), and returns ``{name: (max_abs, max_rel)}`` for ``tools.parity``:

* ``betas/<schedule>`` and ``respace/<spec>`` (spec parsed from the key; the
  number of steps is ``settings["diffusion_steps"]``);
* step groups: every prefix with ``x``, ``model_output``, ``t`` and
  ``timestep_map`` (``full/``, ``s27/``, ...). The schedule is the base schedule
  named in the group's settings (else the global one; if its betas do not match
  the group's stored ``betas`` the other known schedules are tried), respaced
  to the group's own ``timestep_map``; the stored ``betas`` are compared too;
* loss groups: every prefix with ``model_output`` and ``<loss_type>/mse``
  (``loss/``, ``loss100/``, ...), any T and both loss types;
* the sampling loops ``loop/<group>`` (``ddim_cfg``, ``p_cfg``,
  ``inpaint_ddim``, ...; whole loop, worst step, teacher-forced steps) and
  ``clipguide/*``, with the networks of ``models/`` and ``clip/`` beside the
  fixture's folder: see ``parity_loops``, which also explains the ``:cond`` rows
  (errors divided by the step's sensitivity to the model output, for steps
  near t=T where the reference itself moves by up to ~3e-3).

Scaled errors: ``*_noclip`` arrays reach 1e4..1e5 in magnitude near t=T, where
float32 itself only resolves ~1e-3. For them the first ("abs") column is
``max |got - want| / max(1, |want|)`` (absolute below 1, relative above), so
one ``--atol`` is meaningful for every row; their names end in ``:scaled``.
The loss terms (vb reaches ~70 bits/dim) are reported the same way.

Results are memoised per content (settings + arrays + the model fixtures the
loops read), so a test suite checking the same fixture twice computes it once.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from glide_jax.parity.models import Errors, compare

KNOWN_SCHEDULES = ("squaredcos_cap_v2", "linear")
_MEMO: Dict[str, Errors] = {}


def nhwc(a) -> np.ndarray:
    return np.moveaxis(np.asarray(a), 1, -1)


def compare_exact(got, want) -> Tuple[float, float]:
    """``compare`` that reports a shape mismatch (e.g. a different number of kept steps) as an infinite error."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    return compare(got, want)


def compare_scaled(got, want) -> Tuple[float, float]:
    """(max |got-want| / max(1, |want|), max relative error) for arrays with huge entries."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape mismatch: got {got.shape}, reference {want.shape}")
    diff = np.abs(got - want)
    return float((diff / np.maximum(np.abs(want), 1.0)).max(initial=0.0)), compare(got, want)[1]


def _nchw_cmp(got, want, scaled=False):
    got = np.moveaxis(np.asarray(got), -1, 1) if np.ndim(got) == 4 else np.asarray(got)
    return compare_scaled(got, want) if scaled else compare(got, want)


def diffusion_steps(settings: Mapping, section: Optional[Mapping] = None) -> int:
    for d in (section or {}), settings:
        for k in ("diffusion_steps", "T", "steps"):
            if isinstance(d.get(k), int):
                return int(d[k])
    return 1000


def schedule_name(settings: Mapping, section: Optional[Mapping] = None) -> str:
    for d in (section or {}), settings:
        for k in ("noise_schedule", "beta_schedule"):
            if isinstance(d.get(k), str):
                return d[k]
    return "squaredcos_cap_v2"


def respaced_betas(name: str, steps: int, timestep_map) -> Tuple[np.ndarray, np.ndarray]:
    """float64 betas of schedule ``name`` with ``steps`` steps, respaced to keep ``timestep_map``."""
    from glide_jax.diffusion import beta_schedule, respace_betas

    return respace_betas(beta_schedule(name, steps), [int(i) for i in np.asarray(timestep_map)])


def schedule_for_map(name: str, steps: int, timestep_map):
    """The (respaced) ``Schedule`` whose kept original timesteps are exactly ``timestep_map``."""
    from glide_jax.diffusion import schedule_from_betas

    betas, tmap = respaced_betas(name, steps, timestep_map)
    return schedule_from_betas(betas, tmap)


def _step_group_schedule(g, arrays, settings):
    """Base schedule for a step group: its settings first, then whichever known schedule gives its betas."""
    section = settings.get("step_level", {}).get(g, {})
    steps = diffusion_steps(settings, section)
    tmap = arrays[f"{g}/timestep_map"]
    first = schedule_name(settings, section)
    names = [first] + [n for n in KNOWN_SCHEDULES if n != first]
    if f"{g}/betas" in arrays:
        for n in names:
            b, _ = respaced_betas(n, steps, tmap)
            if b.shape == arrays[f"{g}/betas"].shape and np.allclose(b, arrays[f"{g}/betas"], rtol=1e-9, atol=0):
                return n, steps, section
    return first, steps, section


def _eta(tag: str) -> float:
    """``eta05`` -> 0.5, ``eta0`` -> 0.0, ``eta1`` -> 1.0, ``eta025`` -> 0.25 (the fixture's naming)."""
    digits = tag[len("eta"):]
    return float("0." + digits[1:]) if digits.startswith("0") and len(digits) > 1 else float(digits)


def check_step_group(g: str, arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """q_sample, posterior, p_mean_variance (clipped and not), p_sample and every DDIM eta of a step group."""
    import jax.numpy as jnp

    from glide_jax.diffusion import ddim_sample, p_mean_variance, p_sample, q_posterior, q_sample

    name, steps, section = _step_group_schedule(g, arrays, settings)
    a = {k[len(g) + 1:]: v for k, v in arrays.items() if k.startswith(g + "/")}
    betas, tmap = respaced_betas(name, steps, a["timestep_map"])
    s = schedule_for_map(name, steps, a["timestep_map"])
    errors: Errors = {}
    if "betas" in a:
        errors[f"{g}/betas"] = compare_exact(betas, a["betas"])
    spec = section.get("timestep_respacing")
    if spec is not None:
        from glide_jax.diffusion import space_timesteps

        errors[f"{g}/timestep_map"] = compare_exact(np.asarray(space_timesteps(steps, spec or None)), a["timestep_map"])
    t = jnp.asarray(a["t"], jnp.int32)
    x = jnp.asarray(nhwc(a["x"]))
    out = jnp.asarray(nhwc(a["model_output"]))
    seen = []

    def stub(x_, t_model):
        seen.append(np.asarray(t_model))
        return out

    got: Dict[str, object] = {}
    if "x_start" in a:
        x0 = jnp.asarray(nhwc(a["x_start"]))
        if "noise" in a:
            got["q_sample"] = q_sample(s, x0, t, jnp.asarray(nhwc(a["noise"])))
        got["q_posterior_mean"], got["q_posterior_variance"], got["q_posterior_log_variance"] = q_posterior(s, x0, x, t)
    mv = p_mean_variance(s, out, x, t, clip_denoised=True)
    got.update(p_mean=mv.mean, p_variance=mv.variance, p_log_variance=mv.log_variance, p_pred_xstart=mv.pred_xstart)
    raw = p_mean_variance(s, out, x, t, clip_denoised=False)
    got.update(p_mean_noclip=raw.mean, p_pred_xstart_noclip=raw.pred_xstart,
               p_variance_noclip=raw.variance, p_log_variance_noclip=raw.log_variance)
    if "p_sample_noise" in a:
        got["p_sample"], got["p_sample_pred_xstart"] = p_sample(s, stub, x, t, jnp.asarray(nhwc(a["p_sample_noise"])))
    for key in a:
        m = re.fullmatch(r"ddim_sample_(eta\d+)", key)
        if m and f"{key}_noise" in a:
            got[key], got[f"{key}_pred_xstart"] = ddim_sample(
                s, stub, x, t, jnp.asarray(nhwc(a[f"{key}_noise"])), eta=_eta(m.group(1)))
    for key, value in got.items():
        if key in a:
            scaled = key.endswith("_noclip")
            errors[f"{g}/{key}" + (":scaled" if scaled else "")] = _nchw_cmp(value, a[key], scaled)
    if "t_model" in a:
        t_model = seen[-1] if seen else np.asarray(tmap)[np.asarray(a["t"])]
        errors[f"{g}/t_model"] = compare_exact(t_model, a["t_model"])
    return errors


def _loss_section(g, settings):
    tl = settings.get("training_losses", {})
    section = dict(tl.get(g, {}))
    code = tl.get("code", "")
    m = re.search(r"get_named_beta_schedule\('(\w+)'", code)
    if m and "noise_schedule" not in section:
        section["noise_schedule"] = m.group(1)
    if "T" not in section and re.fullmatch(r"loss\d+", g):
        section["T"] = int(g[4:])
    return section


def check_loss_group(g: str, arrays: Mapping[str, np.ndarray], settings: Mapping) -> Errors:
    """guided-diffusion ``training_losses`` (EPSILON, LEARNED_RANGE) for every loss type stored under ``g``."""
    import jax.numpy as jnp

    from glide_jax.diffusion import make_schedule, training_losses

    section = _loss_section(g, settings)
    name = section.get("noise_schedule", "cosine")
    steps = int(section.get("T", 1000))
    s = make_schedule(name, steps)
    a = {k[len(g) + 1:]: v for k, v in arrays.items() if k.startswith(g + "/")}
    out = jnp.asarray(nhwc(a["model_output"]))
    seen = []

    def stub(x_t, t_model):
        seen.append((x_t, t_model))
        return out

    errors: Errors = {}
    loss_types = sorted({k.split("/")[0] for k in a if k.count("/") == 1 and k.endswith("/mse")})
    for lt in loss_types:
        terms = training_losses(s, stub, jnp.asarray(nhwc(a["x_start"])), jnp.asarray(a["t"], jnp.int32),
                                jnp.asarray(nhwc(a["noise"])), loss_type=lt)
        for k, v in terms.items():
            if f"{lt}/{k}" in a:
                errors[f"{g}/{lt}/{k}:scaled"] = compare_scaled(np.asarray(v), a[f"{lt}/{k}"])
    if seen and "x_t" in a:
        errors[f"{g}/x_t"] = _nchw_cmp(seen[0][0], a["x_t"])
    if seen and "t_model" in a:
        errors[f"{g}/t_model"] = compare_exact(np.asarray(seen[0][1]), a["t_model"])
    return errors


def _groups(arrays, members) -> list:
    prefixes = sorted({k.rsplit("/", 1)[0] for k in arrays if "/" in k})
    return [p for p in prefixes if all(f"{p}/{m}" in arrays for m in members)]


def _loss_groups(arrays) -> list:
    out = []
    for p in _groups(arrays, ("model_output", "x_start", "t", "noise")):
        if any(k.startswith(p + "/") and k.endswith("/mse") and k.count("/") == p.count("/") + 2 for k in arrays):
            out.append(p)
    return out


def _memo_key(meta, arrays, path) -> str:
    h = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    if path is not None:
        root = Path(path).resolve().parent.parent
        for f in sorted(list(root.glob("models/*.npz")) + list(root.glob("clip/*.npz"))):
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def check_diffusion(meta: dict, arrays: Mapping[str, np.ndarray], path=None) -> Errors:
    """Reproduce every array group of a diffusion fixture; see the module docstring for names and scaling."""
    key = _memo_key(meta, arrays, path)
    if key in _MEMO:
        return dict(_MEMO[key])
    from glide_jax.diffusion import beta_schedule, space_timesteps

    settings = meta.get("settings", {})
    errors: Errors = {}
    for k in sorted(arrays):
        if k.startswith("betas/"):
            errors[k] = compare_exact(beta_schedule(k[len("betas/"):], len(arrays[k])), arrays[k])
        elif k.startswith("respace/"):
            spec = k[len("respace/"):]
            errors[k] = compare_exact(np.asarray(space_timesteps(diffusion_steps(settings), spec)), arrays[k])
    losses = _loss_groups(arrays)
    for g in _groups(arrays, ("x", "model_output", "t", "timestep_map")):
        if g not in losses:
            errors.update(check_step_group(g, arrays, settings))
    for g in losses:
        errors.update(check_loss_group(g, arrays, settings))
    if any(k.startswith(("loop/", "clipguide/")) for k in arrays):
        if path is None:
            raise ValueError("the loops of a diffusion fixture need its path (models/ and clip/ are read beside it)")
        from glide_jax.parity.loops import check_clipguide, check_loops

        root = Path(path).resolve().parent.parent
        errors.update(check_loops(arrays, settings, root))
        if "clipguide/sample" in arrays:
            errors.update(check_clipguide(arrays, settings, root))
    _MEMO[key] = dict(errors)
    return errors
