"""Network calls of an evaluation with each batch split over this process's devices.

An evaluation scores every generated batch with the Inception (FID) and the CLIP towers
(CLIP score). Those calls are data parallel: the parameters are replicated on every local
device and the batch is cut along its first axis over a 1-D mesh of ``jax.local_devices()``.
Each batch is padded to a fixed number of rows (the batch size rounded up to a multiple of
the device count), so one compilation serves every batch, the last one included. Only
local devices take part: in a run of several processes each one scores its own samples
(:mod:`glide_jax.evaluation.runner`), with no collective between them.

Compiled functions are kept per (function, devices), so scorers made again for another
evaluation in the same process do not compile again.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Hashable, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glide_jax.errors import InputError

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class LocalMesh:
    """A 1-D mesh over some of this process's devices and its two layouts (replicated, split by rows)."""

    devices: Tuple[Any, ...]
    mesh: Mesh
    replicated: NamedSharding
    split: NamedSharding

    def rows(self, batch_size: int) -> int:
        """``batch_size`` rounded up to a multiple of the device count: the rows of every call."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        count = len(self.devices)
        return -(-batch_size // count) * count

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)


@functools.lru_cache(maxsize=None)
def _mesh(devices: Tuple[Any, ...]) -> LocalMesh:
    mesh = Mesh(np.asarray(devices, dtype=object), (AXIS,))
    return LocalMesh(devices, mesh, NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(AXIS)))


def local_mesh(devices: Optional[Sequence[Any]] = None) -> LocalMesh:
    """The mesh over ``devices`` (default: all of this process's devices); they must be local."""
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise InputError("no devices to evaluate on")
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise InputError(f"evaluation devices must belong to this process; {foreign[0]} does not")
    return _mesh(devices)


_COMPILED: Dict[Tuple[Hashable, Tuple[Any, ...], bool], Callable] = {}


def split_jit(key: Hashable, fn: Callable, mesh: LocalMesh, with_params: bool = True) -> Callable:
    """``fn(params, batch)`` (or ``fn(batch)``) jitted with the batch split over ``mesh`` and the
    parameters replicated; ``key`` names ``fn`` (a closure made again must reuse the compilation)."""
    cache_key = (key, mesh.devices, with_params)
    if cache_key not in _COMPILED:
        shardings = (mesh.replicated, mesh.split) if with_params else (mesh.split,)
        _COMPILED[cache_key] = jax.jit(fn, in_shardings=shardings, out_shardings=mesh.split)
    return _COMPILED[cache_key]


def padded(batch: np.ndarray, rows: int, filler: Optional[np.ndarray] = None) -> np.ndarray:
    """``batch`` with copies of ``filler`` (default zeros) appended up to ``rows`` rows."""
    missing = rows - len(batch)
    if missing < 0:
        raise InputError(f"a batch of {len(batch)} rows does not fit the compiled {rows}")
    if not missing:
        return batch
    filler = np.zeros(batch.shape[1:], batch.dtype) if filler is None else np.asarray(filler, batch.dtype)
    return np.concatenate([batch, np.broadcast_to(filler, (missing,) + batch.shape[1:])])


def in_batches(call: Callable[[np.ndarray], jax.Array], inputs: np.ndarray, rows: int,
               filler: Optional[np.ndarray] = None) -> np.ndarray:
    """``call`` over ``inputs`` in padded batches of ``rows``; the real rows of every output, concatenated.

    The next batch is dispatched before the previous one is fetched, so host work overlaps the devices'."""
    outputs, pending = [], None
    for start in range(0, len(inputs), rows):
        chunk = inputs[start:start + rows]
        result = call(padded(chunk, rows, filler))
        if pending is not None:
            outputs.append(np.asarray(pending[0])[:pending[1]])
        pending = (result, len(chunk))
    if pending is not None:
        outputs.append(np.asarray(pending[0])[:pending[1]])
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
