"""The diffusion schedule a fixture's array group was recorded with, read from its json settings.

A diffusion fixture's ``settings`` name the base schedule and step count per
section (``noise_schedule`` or ``beta_schedule``; ``diffusion_steps``, ``T``
or ``steps``), falling back to the global settings and then to GLIDE's
cosine schedule with 1000 steps. Respaced groups store the original
timesteps they kept (``timestep_map``); the schedule is rebuilt from exactly
that map, and the respacing spec of the settings is checked against it
separately, so an error in either shows up on its own row.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np

from glide_jax.diffusion.schedule import Schedule, beta_schedule, respace_betas, schedule_from_betas, space_timesteps
from glide_jax.parity.fixtures import compare_exact

KNOWN_SCHEDULES = ("squaredcos_cap_v2", "linear")


def diffusion_steps(settings: Mapping, section: Optional[Mapping] = None) -> int:
    """Number of base diffusion steps: the section's, else the global setting's, else 1000."""
    for source in (section or {}), settings:
        for name in ("diffusion_steps", "T", "steps"):
            if isinstance(source.get(name), int):
                return int(source[name])
    return 1000


def schedule_name(settings: Mapping, section: Optional[Mapping] = None) -> str:
    """Name of the base beta schedule: the section's, else the global setting's, else the cosine one."""
    for source in (section or {}), settings:
        for name in ("noise_schedule", "beta_schedule"):
            if isinstance(source.get(name), str):
                return source[name]
    return "squaredcos_cap_v2"


def respaced_betas(name: str, steps: int, timestep_map) -> Tuple[np.ndarray, np.ndarray]:
    """float64 betas of schedule ``name`` with ``steps`` steps, respaced to keep ``timestep_map``."""
    return respace_betas(beta_schedule(name, steps), [int(i) for i in np.asarray(timestep_map)])


def schedule_for_map(name: str, steps: int, timestep_map) -> Schedule:
    """The (respaced) ``Schedule`` whose kept original timesteps are exactly ``timestep_map``."""
    betas, kept = respaced_betas(name, steps, timestep_map)
    return schedule_from_betas(betas, kept)


def matching_schedule(first: str, steps: int, timestep_map, stored_betas: Optional[np.ndarray]) -> str:
    """``first``, unless its respaced betas differ from ``stored_betas`` and another known schedule's match."""
    if stored_betas is None:
        return first
    for name in [first] + [n for n in KNOWN_SCHEDULES if n != first]:
        betas, _ = respaced_betas(name, steps, timestep_map)
        if betas.shape == stored_betas.shape and np.allclose(betas, stored_betas, rtol=1e-9, atol=0):
            return name
    return first


def respacing_error(steps: int, spec, timestep_map) -> Tuple[float, float]:
    """Error of ``space_timesteps(steps, spec)`` against a stored ``timestep_map`` (exact, so 0 or not)."""
    return compare_exact(np.asarray(space_timesteps(steps, spec or None)), timestep_map)
