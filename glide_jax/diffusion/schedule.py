"""Noise schedules, timestep respacing and the coefficient tables derived from them.

GLIDE's PyTorch code keeps every table in numpy float64 and casts each lookup to
float32 just before it multiplies a tensor. We reproduce that by computing the
tables once in float64 here and storing the float32 casts in a ``Schedule``
pytree. Because the schedule is an ordinary pytree of arrays (no wrapped model,
no Python object state), it can be passed straight into jitted samplers: two
respacings with the same number of steps share one compiled program.

The sampling loops go further: they read the tables through ``pad_schedule``,
which extends every table to a whole number of ``TABLE_BLOCK`` entries, so
all respacings of a diffusion of up to ``TABLE_BLOCK`` steps (every step
count of GLIDE's 1000-step models) have tables of one shape and share one
compiled loop; the loop only ever reads the entries below the real length.

Respacing is represented explicitly by ``Schedule.timestep_map``: entry ``i``
is the timestep of the original diffusion that respaced index ``i`` stands for,
and it is what the network must be given.

Which timesteps to keep is a string spec (``space_timesteps``), so a step
count anywhere in the package can also name a spacing: ``"20"`` (the
reference's uniform respacing), ``"trailing20"`` (diffusers' trailing
spacing, which starts at the noisiest step and stops short of t=0),
``"logsnr20"`` (uniform in log-SNR) and ``"karras20"`` (Karras et al.'s
sigma ramp), the last two mapped onto the nearest distinct discrete
timesteps of the 1000-step model.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.config import DiffusionConfig
from glide_jax.errors import InputError

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
        raise InputError(f"steps must be >= 1, got {steps}")
    if name == "linear":
        scale = 1000.0 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if name in ("squaredcos_cap_v2", "cosine"):
        out = np.empty(steps, dtype=np.float64)
        for i in range(steps):
            ratio = _cosine_alpha_bar((i + 1) / steps) / _cosine_alpha_bar(i / steps)
            out[i] = min(1.0 - ratio, _MAX_BETA)
        return out
    raise InputError(f"unknown noise schedule {name!r}; expected 'squaredcos_cap_v2' or 'linear'")


def _sections(num_steps: int, counts: Sequence[int]) -> Tuple[int, ...]:
    """Split ``num_steps`` into len(counts) near-equal parts and stride each evenly."""
    n_sec = len(counts)
    if n_sec == 0:
        raise InputError("empty respacing specification")
    base, remainder = divmod(num_steps, n_sec)
    kept = []
    offset = 0
    for k, want in enumerate(counts):
        width = base + (1 if k < remainder else 0)
        if want > width:
            raise RespacingError(f"respacing section {k} has {width} steps, cannot keep {want} of them")
        stride = 1.0 if want <= 1 else (width - 1) / (want - 1)
        pos = 0.0
        for _ in range(want):
            # Python's round() (banker's rounding) is what the reference uses.
            kept.append(offset + round(pos))
            pos += stride
        offset += width
    return tuple(sorted(set(kept)))


class RespacingError(InputError):
    """A respacing specification that names no valid set of timesteps."""


def _count(text: str, spec, what: str = "step count") -> int:
    try:
        value = int(text)
    except ValueError:
        raise RespacingError(f"cannot parse respacing specification {spec!r}: {what} {text!r} is not an integer") from None
    return value


def _trailing(num_steps: int, want: int) -> Tuple[int, ...]:
    """Diffusers' "trailing" spacing: ``round(num_steps - k * num_steps / want) - 1`` for k = 0..want-1.

    Evaluated exactly as diffusers does (a float64 ``arange`` with step
    ``num_steps / want``, numpy's round-half-to-even), so ties fall the same
    way. For some counts (61 of 1000 steps, for one) that float ``arange``
    yields one element too many, whose timestep is -1; diffusers keeps it,
    this spacing drops it. The result always contains ``num_steps - 1``
    (sampling starts at the noisiest step) and ends near
    ``num_steps / want - 1`` instead of 0.
    """
    kept = np.round(np.arange(num_steps, 0, -num_steps / want)).astype(np.int64) - 1
    return tuple(sorted(set(int(t) for t in kept if t >= 0)))


def _log_sigmas(betas: np.ndarray) -> np.ndarray:
    """log(sigma) = log(sqrt((1 - alpha_bar) / alpha_bar)) = -log-SNR / 2 of every original timestep."""
    alpha_bar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    return 0.5 * (np.log1p(-alpha_bar) - np.log(alpha_bar))


def _nearest_distinct(log_sigmas: np.ndarray, targets: np.ndarray) -> Tuple[int, ...]:
    """The timesteps nearest (in log sigma) to decreasing ``targets``, made distinct.

    Where the discrete grid is coarser than the targets (several targets share
    a nearest timestep), the later ones move to the next free timestep below,
    and, at the low-noise end, any that would fall below 0 move back up. So the
    result keeps exactly ``len(targets)`` steps, each within a few timesteps of
    its target's nearest one, in the same order.
    """
    nearest = np.abs(targets[:, None] - log_sigmas[None, :]).argmin(axis=1)
    kept = [int(nearest[0])]
    for t in nearest[1:]:
        kept.append(min(int(t), kept[-1] - 1))
    floor = -1
    for k in range(len(kept) - 1, -1, -1):
        floor = kept[k] = max(kept[k], floor + 1)
    return tuple(sorted(kept))


def _spaced_in_sigma(kind: str, want: int, betas: np.ndarray) -> Tuple[int, ...]:
    """``want`` timesteps from the noisiest to t=0, uniform in log-SNR (``"logsnr"``) or Karras et al.'s rho=7 ramp."""
    log_sigmas = _log_sigmas(betas)
    lo, hi = log_sigmas[0], log_sigmas[-1]
    ramp = np.linspace(0.0, 1.0, want)
    if kind == "logsnr":
        targets = hi + ramp * (lo - hi)
    else:
        rho = 7.0
        top, bottom = np.exp(hi / rho), np.exp(lo / rho)
        targets = rho * np.log(top + ramp * (bottom - top))
    return _nearest_distinct(log_sigmas, targets)


_NAMED_SPACINGS = ("ddim", "trailing", "karras", "logsnr")


def space_timesteps(num_steps: int, spec: RespacingSpec, betas: Optional[np.ndarray] = None) -> Tuple[int, ...]:
    """Sorted original timesteps kept by a respacing specification.

    ``spec`` may be:

    * ``None``/``""``: keep all ``num_steps``;
    * an int, or a string of comma-separated section counts (``"27"``,
      ``"10,10,3,2,2"``), or a sequence of section counts: the reference's
      uniform respacing (each section strided evenly, both ends kept);
    * ``"ddimN"``: the first integer stride giving exactly N steps of
      ``range(0, num_steps, stride)``;
    * ``"fast27"``: ``"10,10,3,2,2"`` with the last step moved two earlier, to
      soften DDIM artefacts at full noise;
    * ``"trailingN"``: diffusers' trailing spacing, N steps ending at the
      noisiest timestep, the smallest near ``num_steps / N - 1``;
      ``"trailingN:T"`` the same over the first T timesteps only (the noisiest
      kept is T - 1): the grid of a few-step student distilled on a shortened
      chain, which sampling enters from a noised canvas at its top;
    * ``"logsnrN"`` / ``"karrasN"``: N steps from the noisiest timestep to 0,
      uniform in log-SNR, or on Karras et al.'s rho=7 ramp in sigma =
      sqrt((1 - alpha_bar) / alpha_bar), each target mapped to the timestep of
      the nearest log sigma; targets sharing a timestep are moved to free
      neighbours, so exactly N distinct steps are kept. These two depend on
      the noise schedule and need its ``betas``. On GLIDE's cosine schedule the
      capped last beta puts log sigma at 9.9 for t=999 against 6.5 at t=998,
      so both spend their first few steps among t >= 990.

    Raises ``RespacingError`` (a ``ValueError``) naming the problem for a
    count below 1 (or a negative section count), more steps than the
    diffusion has, or text that is none of the above.
    """
    if spec is None or spec == "":
        return tuple(range(num_steps))
    if isinstance(spec, (bool, np.bool_)):
        raise RespacingError(f"respacing specification must be a step count or a string, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        return _uniform_sections(num_steps, [int(spec)], spec)
    if not isinstance(spec, str):
        return _uniform_sections(num_steps, [int(c) for c in spec], spec)
    text = spec.strip()
    for name in _NAMED_SPACINGS:
        if text.startswith(name):
            count_text, chain = text[len(name):], num_steps
            if name == "trailing" and ":" in count_text:
                count_text, _, chain_text = count_text.partition(":")
                chain = _count(chain_text, spec, "chain length")
                if not 1 <= chain <= num_steps:
                    raise RespacingError(f"respacing {spec!r} keeps a chain of {chain} steps; trailingN:T needs "
                                         f"1 <= T <= {num_steps}")
            want = _count(count_text, spec)
            if not 1 <= want <= chain:
                raise RespacingError(
                    f"respacing {spec!r} asks for {want} steps; {name}N needs 1 <= N <= {chain}")
            if name == "ddim":
                for stride in range(1, num_steps + 1):
                    if len(range(0, num_steps, stride)) == want:
                        return tuple(range(0, num_steps, stride))
                raise RespacingError(f"respacing {spec!r}: no integer stride gives exactly {want} of {num_steps} steps")
            if name == "trailing":
                return _trailing(chain, want)
            if betas is None:
                raise RespacingError(f"respacing {spec!r} depends on the noise schedule; pass its betas")
            if len(betas) != num_steps:
                raise RespacingError(f"{len(betas)} betas given for a {num_steps}-step diffusion")
            return _spaced_in_sigma(name, want, betas)
    if text == "fast27":
        kept = set(_uniform_sections(num_steps, [10, 10, 3, 2, 2], spec))
        kept.remove(num_steps - 1)
        kept.add(num_steps - 3)
        return tuple(sorted(kept))
    return _uniform_sections(num_steps, [_count(c.strip(), spec, "section count") for c in text.split(",")], spec)


def _uniform_sections(num_steps: int, counts: Sequence[int], spec) -> Tuple[int, ...]:
    """``_sections`` after checking the counts: none negative, at least one step in all."""
    if any(c < 0 for c in counts) or sum(counts) < 1:
        raise RespacingError(
            f"respacing {spec!r} must keep at least 1 step, with no negative section count (got {list(counts)})")
    return _sections(num_steps, counts)


def respace_betas(betas: np.ndarray, use_timesteps: Iterable[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Betas of the sub-chain visiting only ``use_timesteps``, and its timestep map.

    Each kept step jumps straight from the previous kept step, so its beta is
    ``1 - alpha_bar[i] / alpha_bar[previous kept]``; the cumulative products at
    the kept steps are thereby unchanged.
    """
    betas = np.asarray(betas, dtype=np.float64)
    keep = sorted(set(int(i) for i in use_timesteps))
    if not keep or keep[0] < 0 or keep[-1] >= len(betas):
        raise InputError(f"kept timesteps must lie in [0, {len(betas)}), got {keep[:3]}...{keep[-3:]}")
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


def schedule_from_betas(betas: np.ndarray, timestep_map: Optional[np.ndarray] = None,
                        dtype=np.float32) -> Schedule:
    """Build the tables from float64 betas (``timestep_map`` defaults to identity).

    The tables are cast to ``dtype``: float32 as the reference does; float64
    (with ``jax_enable_x64``) only for numerical studies, such as telling a
    solver's own error from float32 rounding, which x_0 = A x - B eps amplifies
    by about 1 / sqrt(alpha_bar) = 2e4 at the cosine schedule's last step.
    """
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or not ((b > 0).all() and (b <= 1).all()):
        raise InputError("betas must be a 1-D array with values in (0, 1]")
    n = b.shape[0]
    tmap = np.arange(n) if timestep_map is None else np.asarray(timestep_map)
    if tmap.shape != (n,):
        raise InputError(f"timestep_map has shape {tmap.shape}, expected ({n},)")
    ab = np.cumprod(1.0 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = b * (1.0 - ab_prev) / (1.0 - ab)
    # The posterior variance is 0 at t=0; its log borrows the t=1 value there (beta_0 in a one-step chain,
    # which has no t=1: its only step lands on the clean image and never draws noise).
    post_log_var = np.log(np.concatenate([post_var[1:2] if n > 1 else b[:1], post_var[1:]]))
    # device_put, not jnp.asarray: in jax 0.10 the latter compiles a small copy program per array shape,
    # i.e. once more for every new step count.
    f32 = lambda a: jax.device_put(np.asarray(a, dtype=np.float64).astype(dtype))
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
        timestep_map=jax.device_put(tmap.astype(np.int32)),
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
            raise InputError(f"steps={steps} contradicts the config's steps={config_or_name.steps}")
        steps = config_or_name.steps
    else:
        name = config_or_name
        steps = 1000 if steps is None else steps
    betas = beta_schedule(name, steps)
    if respacing is None or respacing == "":
        return schedule_from_betas(betas)
    new_betas, tmap = respace_betas(betas, space_timesteps(steps, respacing, betas))
    return schedule_from_betas(new_betas, tmap)


# Loops read tables padded to a multiple of this many entries (see ``pad_schedule``).
TABLE_BLOCK = 1024


def padded_table_length(num_timesteps: int) -> int:
    """The smallest multiple of ``TABLE_BLOCK`` that holds ``num_timesteps`` entries."""
    if num_timesteps < 1:
        raise InputError(f"a schedule has at least 1 timestep, got {num_timesteps}")
    return -(-num_timesteps // TABLE_BLOCK) * TABLE_BLOCK


def _padded(table: jnp.ndarray, length: int) -> jnp.ndarray:
    extra = length - table.shape[0]
    if isinstance(table, jax.core.Tracer):
        return jnp.concatenate([table, jnp.broadcast_to(table[-1:], (extra,))])
    # Concrete tables are padded on the host: a device op would compile once per table length.
    host = np.asarray(table)
    return jax.device_put(np.concatenate([host, np.repeat(host[-1:], extra)]))


def pad_schedule(s: Schedule, length: Optional[int] = None) -> Schedule:
    """``s`` with every table extended to ``length`` entries (default ``padded_table_length``).

    The entries past ``s.num_timesteps`` repeat the last one; they exist only
    to give the tables a shape that does not depend on the step count, and a
    sampler starting at an index below ``s.num_timesteps`` never reads them.
    So the padded schedule's ``num_timesteps`` is the padded length: keep the
    real one from ``s``.
    """
    n = s.num_timesteps
    length = padded_table_length(n) if length is None else int(length)
    if length < n:
        raise InputError(f"cannot pad a {n}-step schedule to {length} entries")
    if length == n:
        return s
    return jax.tree_util.tree_map(lambda table: _padded(table, length), s)
