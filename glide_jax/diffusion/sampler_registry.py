"""Samplers as registered step functions: the one table the sampling loop, the options check, the
command line's help and the demo's menu all read.

A :class:`Sampler` is a name and a step ``step(schedule, model_fn, x, t, state, noise, eta, options) ->
(x, state)`` that takes the batch from schedule index ``t`` to the previous one. ``state`` is the
sampler's memory between steps (``init_state(x_T)``; None for one-step samplers), ``noise`` the
standard-normal draw of this step (None for samplers that draw nothing) and ``options`` the keyword
arguments every step passes on to the prediction (``clip_denoised``, ``denoised_fn``, ``cond_fn``).
``sample_loop`` runs any registered sampler inside the same compiled loop; a new sampler is one
:func:`register_sampler` call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

from glide_jax.named import Registry


NOISE_POLICIES = ("none", "always", "eta")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One way of taking reverse steps."""

    name: str  # what StageOptions.sampler, --sampler and the demo's menu say
    step: Callable[..., Tuple[Any, Any]]  # (s, model_fn, x, t, state, noise, eta, options) -> (x, state)
    # per-step noise: "none" (deterministic: nothing is drawn), "always" (needs a key or noise source),
    # "eta" (needs one only when eta != 0, as DDIM)
    noise: str = "always"
    init_state: Optional[Callable[[Any], Any]] = None  # x_T -> the memory of a multistep solver
    order: int = 1  # order of accuracy of the solver, for help texts
    description: str = ""  # one line for help texts

    def __post_init__(self):
        if self.noise not in NOISE_POLICIES:
            raise InputError(f"sampler {self.name!r}: noise must be one of {NOISE_POLICIES}, got {self.noise!r}")

    @property
    def deterministic(self) -> bool:
        return self.noise == "none"

    def initial_state(self, x_T):
        return None if self.init_state is None else self.init_state(x_T)


_SAMPLERS: Registry[Sampler] = Registry("sampler")


def register_sampler(sampler: Sampler) -> Sampler:
    if not isinstance(sampler, Sampler):
        raise TypeError(f"register_sampler takes a Sampler, got {type(sampler).__name__}")
    return _SAMPLERS.register(sampler.name, sampler)


def sampler_names() -> Tuple[str, ...]:
    return _SAMPLERS.names()


def sampler_named(name: str) -> Sampler:
    return _SAMPLERS.get(name)
