"""Where a sampling loop's per-step noise comes from.

A reverse diffusion step adds fresh Gaussian noise; which numbers those are
is a choice separate from the sampler. A ``NoiseSource`` makes it explicit:
``draw(step, x)`` returns the standard-normal array for loop step ``step``
(0 is the first step taken, counting down from the start index) with ``x``'s
shape and dtype. Sources are pytrees (NamedTuples) whose arrays are leaves, so
a compiled loop is reused for every new key or new recorded array of the same
shape; only the kind of source is part of the compilation key.

* ``PRNGNoise(key)`` draws ``normal(fold_in(key, step))``: the default, so a
  sample is a pure function of its key.
* ``RowNoise(keys)`` draws row ``r`` from its own key ``keys[r]``: a row's
  noise then does not depend on which other rows share its batch, which is
  what makes an image a function of its own seed and index only.
* ``RecordedNoise(noises)`` replays ``noises[step]`` from an array
  ``[steps, *x.shape]``, e.g. the noises the PyTorch reference drew, so a
  whole loop can be compared with it number for number.
* ``ZeroNoise()`` gives zeros, for samplers that never use the noise
  (DDIM with eta=0) when no key is at hand.

Every sampler draws once per step, after the model call, also at t=0 (where
the noise is masked out) and also for DDIM with eta=0: the reference's order,
which is what lets a recorded array line up with the steps.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp

from glide_jax.errors import InputError


@runtime_checkable
class NoiseSource(Protocol):
    def draw(self, step: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        """Standard-normal noise for loop step ``step`` (a traced int32), shaped and typed like ``x``."""
        ...

    def validate(self, num_steps: int, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` when this source cannot serve ``num_steps`` draws of ``shape``."""
        ...


class PRNGNoise(NamedTuple):
    """Noise drawn from a PRNG key, independently per step: ``normal(fold_in(key, step))``."""

    key: jax.Array

    def draw(self, step, x):
        return jax.random.normal(jax.random.fold_in(self.key, step), x.shape, x.dtype)

    def validate(self, num_steps, shape):
        del num_steps, shape  # a key serves any number of draws of any shape


def row_normal(keys: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jnp.ndarray:
    """``[len(keys), *shape]`` standard normals, row ``r`` drawn from ``keys[r]`` alone."""
    return jax.vmap(lambda key: jax.random.normal(key, tuple(shape), dtype))(keys)


class RowNoise(NamedTuple):
    """Noise drawn per row: row ``r`` of step ``k`` is ``normal(fold_in(keys[r], k))``."""

    keys: jax.Array  # [batch] typed PRNG keys

    def draw(self, step, x):
        return row_normal(jax.vmap(lambda key: jax.random.fold_in(key, step))(self.keys), x.shape[1:], x.dtype)

    def validate(self, num_steps, shape):
        del num_steps
        if self.keys.shape[:1] != tuple(shape)[:1]:
            raise InputError(f"RowNoise has {self.keys.shape[0]} keys for a batch of {shape[0]} rows")


class RecordedNoise(NamedTuple):
    """Noise replayed from an array ``[steps, *shape]``: step ``k`` gets ``noises[k]``."""

    noises: jnp.ndarray

    def draw(self, step, x):
        return jax.lax.dynamic_index_in_dim(self.noises, step, keepdims=False).astype(x.dtype)

    def validate(self, num_steps, shape):
        want = (int(num_steps),) + tuple(shape)
        if tuple(self.noises.shape) != want:
            raise InputError(
                f"recorded noises must have shape {want} (one per step of the loop), got {tuple(self.noises.shape)}"
            )


class ZeroNoise(NamedTuple):
    """All-zero noise: for a loop whose sampler adds none (DDIM with eta=0)."""

    def draw(self, step, x):
        del step
        return jnp.zeros_like(x)

    def validate(self, num_steps, shape):
        del num_steps, shape
