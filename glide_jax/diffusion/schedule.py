"""Noise schedules, timestep respacing and the coefficient tables derived from them.

GLIDE's PyTorch code keeps every table in numpy float64 and casts each lookup to
float32 just before it multiplies a tensor. We reproduce that by computing the
tables once in float64 here and storing the float32 casts in a ``Schedule``
pytree. Because the schedule is an ordinary pytree of arrays (no wrapped model,
no Python object state), it can be passed straight into jitted samplers: two
respacings with the same number of steps share one compiled program.

Respacing is represented explicitly by ``Schedule.timestep_map``: entry ``i``
is the timestep of the original diffusion that respaced index ``i`` stands for,
and it is what the network must be given.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import flax.struct
import jax.numpy as jnp
import numpy as np

from glide_jax.config import DiffusionConfig

RespacingSpec = Union[None, str, int, Sequence[int]]

# Largest beta the cosine schedule may produce; keeps the last step invertible.
_MAX_BETA = 0.999


def _cosine_alpha_bar(u: float) -> float:
    return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2


def beta_schedule(name: str, steps: int) -> np.ndarray:
    """Return the float64 betas of a named schedule with ``steps`` entries.

    ``"squaredcos_cap_v2"`` (alias ``"cosine"``) discretises the cosine
    alpha-bar curve of Nichol & Dhariwal; ``"linear"`` is Ho et al.'s schedule
    stretched so that its shape does not depend on ``steps``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if name == "linear":
        scale = 1000.0 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if name in ("squaredcos_cap_v2", "cosine"):
        out = np.empty(steps, dtype=np.float64)
        for i in range(steps):
            ratio = _cosine_alpha_bar((i + 1) / steps) / _cosine_alpha_bar(i / steps)
            out[i] = min(1.0 - ratio, _MAX_BETA)
        return out
    raise ValueError(f"unknown noise schedule {name!r}; expected 'squaredcos_cap_v2' or 'linear'")


def _sections(num_steps: int, counts: Sequence[int]) -> Tuple[int, ...]:
    """Split ``num_steps`` into len(counts) near-equal parts and stride each evenly."""
    n_sec = len(counts)
    if n_sec == 0:
        raise ValueError("empty respacing specification")
    base, remainder = divmod(num_steps, n_sec)
    kept = []
    offset = 0
    for k, want in enumerate(counts):
        width = base + (1 if k < remainder else 0)
        if want > width:
            raise ValueError(f"section {k} has {width} steps, cannot keep {want} of them")
        stride = 1.0 if want <= 1 else (width - 1) / (want - 1)
        pos = 0.0
        for _ in range(want):
            # Python's round() (banker's rounding) is what the reference uses.
            kept.append(offset + round(pos))
            pos += stride
        offset += width
    return tuple(sorted(set(kept)))


def space_timesteps(num_steps: int, spec: RespacingSpec) -> Tuple[int, ...]:
    """Sorted original timesteps kept by a respacing specification.

    ``spec`` may be: ``None``/``""`` (keep all), an int or a string of
    comma-separated section counts (``"27"``, ``"10,10,3,2,2"``), a sequence of
    section counts, ``"ddimN"`` (the first integer stride giving exactly N steps
    of ``range(0, num_steps, stride)``) or ``"fast27"`` (``"10,10,3,2,2"`` with
    the last step moved two earlier, to soften DDIM artefacts at full noise).
    """
    if spec is None or spec == "":
        return tuple(range(num_steps))
    if isinstance(spec, (int, np.integer)):
        return _sections(num_steps, [int(spec)])
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("ddim"):
            want = int(text[4:])
            for stride in range(1, num_steps):
                kept = range(0, num_steps, stride)
                if len(kept) == want:
                    return tuple(kept)
            raise ValueError(f"no integer stride gives exactly {want} of {num_steps} steps")
        if text == "fast27":
            kept = set(_sections(num_steps, [10, 10, 3, 2, 2]))
            kept.remove(num_steps - 1)
            kept.add(num_steps - 3)
            return tuple(sorted(kept))
        try:
            counts = [int(c) for c in text.split(",")]
        except ValueError as e:
            raise ValueError(f"cannot parse respacing specification {spec!r}") from e
        return _sections(num_steps, counts)
    return _sections(num_steps, [int(c) for c in spec])


def respace_betas(betas: np.ndarray, use_timesteps: Iterable[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Betas of the sub-chain visiting only ``use_timesteps``, and its timestep map.

    Each kept step jumps straight from the previous kept step, so its beta is
    ``1 - alpha_bar[i] / alpha_bar[previous kept]``; the cumulative products at
    the kept steps are thereby unchanged.
    """
    betas = np.asarray(betas, dtype=np.float64)
    keep = sorted(set(int(i) for i in use_timesteps))
    if not keep or keep[0] < 0 or keep[-1] >= len(betas):
        raise ValueError(f"kept timesteps must lie in [0, {len(betas)}), got {keep[:3]}...{keep[-3:]}")
    alpha_bar = np.cumprod(1.0 - betas)
    new_betas = []
    last = 1.0
    for i in keep:
        new_betas.append(1.0 - alpha_bar[i] / last)
        last = alpha_bar[i]
    return np.asarray(new_betas, dtype=np.float64), np.asarray(keep, dtype=np.int64)


@flax.struct.dataclass
class Schedule:
    """Float32 coefficient tables of a (possibly respaced) Gaussian diffusion.

    All tables have one entry per diffusion index ``t`` (``0 .. num_timesteps-1``).
    ``timestep_map[t]`` is the model timestep (int32) of index ``t``.
    """

    betas: jnp.ndarray
    log_betas: jnp.ndarray
    alphas_cumprod: jnp.ndarray
    alphas_cumprod_prev: jnp.ndarray
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    sqrt_recip_alphas_cumprod: jnp.ndarray
    sqrt_recipm1_alphas_cumprod: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    posterior_mean_coef1: jnp.ndarray
    posterior_mean_coef2: jnp.ndarray
    timestep_map: jnp.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def schedule_from_betas(betas: np.ndarray, timestep_map: Optional[np.ndarray] = None) -> Schedule:
    """Build the tables from float64 betas (``timestep_map`` defaults to identity)."""
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or not ((b > 0).all() and (b <= 1).all()):
        raise ValueError("betas must be a 1-D array with values in (0, 1]")
    n = b.shape[0]
    tmap = np.arange(n) if timestep_map is None else np.asarray(timestep_map)
    if tmap.shape != (n,):
        raise ValueError(f"timestep_map has shape {tmap.shape}, expected ({n},)")
    ab = np.cumprod(1.0 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = b * (1.0 - ab_prev) / (1.0 - ab)
    # The posterior variance is 0 at t=0; its log borrows the t=1 value there.
    post_log_var = np.log(np.concatenate([post_var[1:2] if n > 1 else post_var[:1], post_var[1:]]))
    f32 = lambda a: jnp.asarray(np.asarray(a, dtype=np.float64).astype(np.float32))
    return Schedule(
        betas=f32(b),
        log_betas=f32(np.log(b)),
        alphas_cumprod=f32(ab),
        alphas_cumprod_prev=f32(ab_prev),
        sqrt_alphas_cumprod=f32(np.sqrt(ab)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ab)),
        sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / ab)),
        sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / ab - 1.0)),
        posterior_variance=f32(post_var),
        posterior_log_variance_clipped=f32(post_log_var),
        posterior_mean_coef1=f32(b * np.sqrt(ab_prev) / (1.0 - ab)),
        posterior_mean_coef2=f32((1.0 - ab_prev) * np.sqrt(1.0 - b) / (1.0 - ab)),
        timestep_map=jnp.asarray(tmap.astype(np.int32)),
    )


def make_schedule(
    config_or_name: Union[DiffusionConfig, str] = "squaredcos_cap_v2",
    steps: Optional[int] = None,
    respacing: RespacingSpec = None,
) -> Schedule:
    """Schedule for a ``DiffusionConfig`` (or a schedule name and step count), optionally respaced.

    ``make_schedule(cfg, respacing="100")`` is the 100-step sampler of a
    1000-step model; ``respacing`` accepts everything ``space_timesteps`` does.
    """
    if isinstance(config_or_name, DiffusionConfig):
        name = config_or_name.noise_schedule
        if steps is not None and steps != config_or_name.steps:
            raise ValueError(f"steps={steps} contradicts the config's steps={config_or_name.steps}")
        steps = config_or_name.steps
    else:
        name = config_or_name
        steps = 1000 if steps is None else steps
    betas = beta_schedule(name, steps)
    if respacing is None or respacing == "":
        return schedule_from_betas(betas)
    new_betas, tmap = respace_betas(betas, space_timesteps(steps, respacing))
    return schedule_from_betas(new_betas, tmap)
