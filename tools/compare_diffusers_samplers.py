"""UniPC and Euler-ancestral against diffusers, step by step: ``python -m tools.compare_diffusers_samplers``.

diffusers is not a dependency of glide_jax; it lives in a separate virtual
environment whose interpreter this tool runs as a subprocess (``--python``,
else ``$GLIDE_JAX_DIFFUSERS_PYTHON``, else ``.venv-diffusers/bin/python`` in the repository;
set one up with ``python3 -m venv DIR && DIR/bin/pip install torch diffusers
numpy``). That side imports nothing of glide_jax: it gets plain arrays and
settings in an ``.npz`` file and answers with arrays in another.

What is compared: on GLIDE's 1000-step cosine schedule (squaredcos_cap_v2),
with the exact noise prediction of Gaussian data x_0 ~ N(0.3, 0.2^2), from the
same x_T (and, for Euler-ancestral, the same per-step noise draws, handed to
diffusers in place of its own), every sample of

* ``UniPCMultistepScheduler(solver_type="bh2", predict_x0=True,
  lower_order_final=True)`` of order 1, 2 and 3 against our ``"unipc"``
  (order 2), ``"unipc3"`` and the order-1 ``unipc_step``, on diffusers'
  "linspace" and "trailing" timesteps, in float32 (our compiled loop) and in
  float64 (our step functions on float64 tables; diffusers given float64
  sigmas);
* ``EulerAncestralDiscreteScheduler`` ("trailing" timesteps, float32, the
  only precision its step runs in) against our ``"euler_a"``, diffusers'
  variance-exploding samples converted back by 1 / sqrt(sigma^2 + 1); once
  from t=999 and once from the second timestep;

at 5, 10, 20 and 50 steps. Our loop visits exactly diffusers' timesteps
(``respace_betas`` of them), and our ``trailingN`` respacing is checked
against diffusers' trailing timesteps for every N from 1 to 1000. Prints
JSON: the max abs difference per case, the maxima per precision, and the
float32 rounding floor of each side.

Measured with diffusers 0.42.1 and torch 2.13.0 on CPU (samples of order 1):

* float64: every UniPC trajectory (orders 1, 2 and 3, both spacings, 5 to 50
  steps) agrees within 2.7e-11, so the two compute the same solver;
* float32: UniPC within 2.1e-3 and Euler-ancestral within 8.7e-4, which is
  float32 rounding at t=999: there x_0 = (x - sigma eps) / alpha divides by
  alpha = 4.9e-5, and diffusers' own float32 and float64 UniPC runs differ by
  1.5e-3 (ours for Euler-ancestral by 5.7e-4). Started from the second
  timestep, Euler-ancestral agrees within 2.3e-6;
* trailing timesteps: equal for all 1000 step counts, except that for 62 of
  them diffusers' float ``arange`` adds a timestep -1, which ``trailingN``
  leaves out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_PYTHON = str(Path(__file__).resolve().parents[1] / ".venv-diffusers" / "bin" / "python")
DATA_MEAN, DATA_STD = 0.3, 0.2
STEP_COUNTS = (5, 10, 20, 50)
# Cases whose name ends so start at the second timestep, leaving out t=999, where float32 rounding dominates.
_FROM_SECOND = "_from_second_step"
# (name, diffusers scheduler, timestep spacing, UniPC order)
CASES = tuple(
    [(f"unipc{order}/{spacing}", "unipc", spacing, order) for order in (1, 2, 3) for spacing in ("linspace", "trailing")]
    + [("euler_a/trailing", "euler_a", "trailing", 0), (f"euler_a/trailing{_FROM_SECOND}", "euler_a", "trailing", 0)]
)
SHAPE = (4, 3, 3, 2)


def _runs():
    """(case..., precision): UniPC in float32 and float64; Euler-ancestral in float32, the only one diffusers does."""
    for name, kind, spacing, order in CASES:
        for precision in (("float32", "float64") if kind == "unipc" else ("float32",)):
            yield name, kind, spacing, order, precision


def diffusers_python(explicit: str | None = None) -> str | None:
    """The side interpreter to use, or None when none is configured and the default does not exist."""
    if explicit:
        return explicit
    if os.environ.get("GLIDE_JAX_DIFFUSERS_PYTHON"):
        return os.environ["GLIDE_JAX_DIFFUSERS_PYTHON"]
    return DEFAULT_PYTHON if Path(DEFAULT_PYTHON).exists() else None


# ---- the diffusers side: numpy, torch and diffusers only ----

def _gaussian_eps(alphas_cumprod, x, t):
    """The exact eps of N(DATA_MEAN, DATA_STD^2) data at timestep t, for a torch tensor x."""
    ab = float(alphas_cumprod[int(t)])
    return (1 - ab) ** 0.5 * (x - ab**0.5 * DATA_MEAN) / (ab * DATA_STD**2 + 1 - ab)


def run_diffusers(request: Path, answer: Path) -> None:
    import diffusers
    import torch
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as euler_module

    req = np.load(request)
    out = {"version": np.array(f"diffusers {diffusers.__version__}, torch {torch.__version__}")}
    for n in range(1, 1001):
        sched = diffusers.EulerAncestralDiscreteScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
        sched.set_timesteps(n)
        out[f"trailing/{n}"] = sched.timesteps.numpy().astype(np.int64)
    for name, kind, spacing, order, precision in _runs():
        for steps in STEP_COUNTS:
            key = f"{name}/{precision}/{steps}"
            x = torch.from_numpy(req["x_T"].astype(precision))
            ab = req[f"alphas_cumprod/{precision}"]
            trajectory = []
            if kind == "unipc":
                sched = diffusers.UniPCMultistepScheduler(
                    beta_schedule="squaredcos_cap_v2", solver_order=order, solver_type="bh2", predict_x0=True,
                    lower_order_final=True, prediction_type="epsilon", timestep_spacing=spacing)
                sched.set_timesteps(steps)
                if precision == "float64":
                    # diffusers keeps float32 sigmas; in float64 runs it gets the exact ones at its own timesteps.
                    exact = np.sqrt((1 - ab) / ab)[sched.timesteps.numpy()]
                    sched.sigmas = torch.from_numpy(np.concatenate([exact, [0.0]]))
                for t in sched.timesteps:
                    x = sched.step(_gaussian_eps(ab, x, t), t, x).prev_sample
                    trajectory.append(x.numpy())
            else:
                sched = diffusers.EulerAncestralDiscreteScheduler(beta_schedule="squaredcos_cap_v2",
                                                                  timestep_spacing=spacing)
                sched.set_timesteps(steps)
                if name.endswith(_FROM_SECOND):
                    sched.timesteps, sched.sigmas = sched.timesteps[1:], sched.sigmas[1:]
                noises = iter(torch.from_numpy(req[f"noise/{steps}"]))
                euler_module.randn_tensor = lambda *args, **kwargs: next(noises)
                sigmas = sched.sigmas.numpy().astype(np.float64)
                # The VE starting point for our x_T: x_T * sqrt(sigma_start^2 + 1).
                x = x * float(np.sqrt(sigmas[0] ** 2 + 1))
                for k, t in enumerate(sched.timesteps):
                    eps = _gaussian_eps(ab, sched.scale_model_input(x, t), t)
                    x = sched.step(eps, t, x).prev_sample
                    trajectory.append(x.numpy() / np.sqrt(sigmas[k + 1] ** 2 + 1))
            out[f"{key}/timesteps"] = sched.timesteps.numpy().astype(np.int64)
            out[f"{key}/trajectory"] = np.stack(trajectory).astype(np.float64)
    np.savez(answer, **out)


# ---- our side ----

def _our_trajectory(kind, order, timesteps, x_T, noises):
    """Our samples after every step: float32 through the compiled loop (``sample_trajectory``); float64 through the
    same step functions called one by one, since the compiled loop runs in float32 only."""
    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial

    from glide_jax.diffusion import (
        RecordedNoise, UniPCState, beta_schedule, euler_ancestral_step, respace_betas, sample_trajectory,
        schedule_from_betas, unipc_step)

    precision = x_T.dtype.type
    jax.config.update("jax_enable_x64", precision == np.float64)
    betas = beta_schedule("squaredcos_cap_v2", 1000)
    full = schedule_from_betas(betas, dtype=precision)
    schedule = schedule_from_betas(*respace_betas(betas, timesteps), dtype=precision)
    model = Partial(_jax_gaussian_model, full.alphas_cumprod)
    noises = jnp.asarray(noises[: len(timesteps)], precision)
    if precision == np.float32:
        sampler = {"euler_a": "euler_a", 2: "unipc", 3: "unipc3"}.get(kind if kind == "euler_a" else order)
        if sampler is not None:
            return np.asarray(sample_trajectory(schedule, model, jnp.asarray(x_T), RecordedNoise(noises),
                                                sampler=sampler, clip_denoised=False))
    x, out = jnp.asarray(x_T), []
    state = None if kind == "euler_a" else UniPCState.init(x, order)
    for k, i in enumerate(range(schedule.num_timesteps - 1, -1, -1)):
        t = jnp.full((x.shape[0],), i, jnp.int32)
        if kind == "euler_a":
            x, _ = euler_ancestral_step(schedule, model, x, t, noises[k], clip_denoised=False)
        else:
            x, _, state = unipc_step(schedule, model, x, t, state, clip_denoised=False)
        out.append(np.asarray(x))
    return np.stack(out)


def _jax_gaussian_model(alphas_cumprod, x, t_model):
    import jax.numpy as jnp

    ab = jnp.take(alphas_cumprod, t_model).reshape(-1, 1, 1, 1)
    eps = jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * DATA_MEAN) / (ab * DATA_STD**2 + 1 - ab)
    return jnp.concatenate([eps, jnp.zeros_like(x)], -1)


def compare(python: str, seed: int = 0) -> dict:
    """Run both sides and return the max abs differences (``"cases"``, ``"max"`` per precision) and the checks."""
    from glide_jax.diffusion import beta_schedule, make_schedule, space_timesteps

    rng = np.random.default_rng(seed)
    request = {
        "alphas_cumprod/float32": np.asarray(make_schedule("squaredcos_cap_v2", 1000).alphas_cumprod, np.float64),
        "alphas_cumprod/float64": np.cumprod(1 - beta_schedule("squaredcos_cap_v2", 1000)),
        "x_T": rng.standard_normal(SHAPE).astype(np.float32),
    }
    for steps in STEP_COUNTS:
        request[f"noise/{steps}"] = rng.standard_normal((steps,) + SHAPE).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        req_path, ans_path = Path(tmp) / "request.npz", Path(tmp) / "answer.npz"
        np.savez(req_path, **request)
        done = subprocess.run([python, str(Path(__file__).resolve()), "--diffusers-side", str(req_path),
                               str(ans_path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the diffusers side failed:\n{done.stderr[-3000:]}")
        answer = dict(np.load(ans_path))
    # diffusers' trailing timesteps for N = 1..1000, less the stray -1 its float arange yields for some N.
    trailing = {n: answer[f"trailing/{n}"].tolist() for n in range(1, 1001)}
    trailing_mismatch = [n for n, ts in trailing.items()
                         if tuple(sorted(t for t in ts if t >= 0)) != space_timesteps(1000, f"trailing{n}")]
    diffusers_minus_one = [n for n, ts in trailing.items() if min(ts) < 0]
    cases = {}
    for name, kind, _, order, precision in _runs():
        for steps in STEP_COUNTS:
            key = f"{name}/{precision}/{steps}"
            timesteps = sorted(answer[f"{key}/timesteps"].tolist())
            ours = _our_trajectory(kind, order, timesteps, request["x_T"].astype(precision), request[f"noise/{steps}"])
            cases[key] = float(np.abs(ours - answer[f"{key}/trajectory"]).max())
    # diffusers against itself: how far float32 rounding alone moves its UniPC trajectories.
    own_rounding = {f"{name}/{steps}": float(np.abs(answer[f"{name}/float32/{steps}/trajectory"]
                                                   - answer[f"{name}/float64/{steps}/trajectory"]).max())
                    for name, kind, _, _ in CASES if kind == "unipc" for steps in STEP_COUNTS}
    # Ours against itself for Euler-ancestral, which diffusers runs only in float32: the same rounding floor.
    own_rounding_euler = 0.0
    for name, kind, _, _ in CASES:
        for steps in STEP_COUNTS:
            if kind != "euler_a":
                continue
            timesteps = sorted(answer[f"{name}/float32/{steps}/timesteps"].tolist())
            pair = [_our_trajectory("euler_a", 0, timesteps, request["x_T"].astype(p), request[f"noise/{steps}"])
                    for p in (np.float32, np.float64)]
            own_rounding_euler = max(own_rounding_euler, float(np.abs(pair[0] - pair[1]).max()))
    by_precision = {p: max(v for k, v in cases.items() if f"/{p}/" in k) for p in ("float32", "float64")}
    return {"versions": str(answer["version"]), "cases": cases, "max": by_precision,
            "diffusers_unipc_float32_vs_float64": max(own_rounding.values()),
            "ours_euler_a_float32_vs_float64": own_rounding_euler,
            "euler_a_from_second_step": max(v for k, v in cases.items() if _FROM_SECOND in k),
            "trailing_mismatch": trailing_mismatch,
            "diffusers_trailing_with_minus_one": len(diffusers_minus_one)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=None, help="interpreter of a virtual environment with torch and diffusers")
    ap.add_argument("--diffusers-side", nargs=2, metavar=("REQUEST", "ANSWER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.diffusers_side:
        run_diffusers(Path(args.diffusers_side[0]), Path(args.diffusers_side[1]))
        return 0
    python = diffusers_python(args.python)
    if python is None:
        print(f"error: no diffusers interpreter: pass --python, set GLIDE_JAX_DIFFUSERS_PYTHON or create "
              f"{DEFAULT_PYTHON}", file=sys.stderr)
        return 2
    print(json.dumps(compare(python), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
