"""Placing a training run on a device mesh: mesh, parameter and batch layouts, jitted step.

The mesh has the axes of ``glide_jax.models.partitioning.MESH_AXES`` --
``data`` (replicas), ``fsdp`` (parameters, optimiser state *and* batch are
split) and ``tensor`` (model-parallel matmuls). Models never name mesh axes;
their parameters carry logical names that ``LOGICAL_RULES`` maps to mesh axes.
A dimension that the assigned mesh axes do not divide stays whole (e.g. the 3
input channels of the first convolution), so any model fits any mesh.

The state is never materialised unsharded: its shapes and logical names come
from ``jax.eval_shape`` of the init function (:func:`tree_shardings` turns them
into layouts), and ``glide_jax.train.loop.build_state`` jits the init with
those ``out_shardings`` so every device creates only its own shards. That is
what makes a 3.5B-parameter state (plus EMA and Adam moments) initialisable on
a pod whose single host could not hold it.

Multi-host runs call :func:`maybe_initialize_distributed` first; each host
feeds its own slice of the global batch (``glide_jax.data.input_pipeline.global_batch``),
laid out by :func:`batch_sharding`, the one batch layout of training. Where the
processes may drift apart by more than a few seconds (one of them learning the
tokenizer, compiling more slowly), they meet at :func:`wait_for_all_processes`,
a barrier of the coordination service, before the next device collective: the
first collective over a set of devices sets up its CPU (gloo) context with a
fixed 30-second deadline.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from glide_jax.errors import InputError
from glide_jax.models.partitioning import LOGICAL_RULES, MESH_AXES
from glide_jax.train.experiment import MeshConfig

log = logging.getLogger(__name__)

BATCH_AXES: Tuple[str, ...] = ("data", "fsdp")
_distributed_started = False


def maybe_initialize_distributed() -> bool:
    """Start JAX's multi-process runtime when this process is one of several; else do nothing.

    Explicit: ``GLIDE_JAX_COORDINATOR`` (host:port), ``GLIDE_JAX_NUM_PROCESSES``,
    ``GLIDE_JAX_PROCESS_ID``. Auto-detected (``jax.distributed.initialize()`` reads
    the cluster itself): a Cloud TPU pod slice (``TPU_WORKER_HOSTNAMES`` lists
    several hosts), a SLURM job with several tasks, or ``GLIDE_JAX_DISTRIBUTED=1``.
    Must run before anything touches a device. Returns whether it initialised.
    """
    global _distributed_started
    if _distributed_started:
        return True
    env = os.environ
    if env.get("GLIDE_JAX_COORDINATOR"):
        jax.distributed.initialize(
            coordinator_address=env["GLIDE_JAX_COORDINATOR"],
            num_processes=int(env["GLIDE_JAX_NUM_PROCESSES"]),
            process_id=int(env["GLIDE_JAX_PROCESS_ID"]),
        )
    elif (
        env.get("GLIDE_JAX_DISTRIBUTED", "").lower() in ("1", "true")
        or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
        or int(env.get("SLURM_NTASKS", "1") or 1) > 1
    ):
        jax.distributed.initialize()
    else:
        return False
    _distributed_started = True
    log.info("distributed runtime: process %d of %d", jax.process_index(), jax.process_count())
    return True


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
    """Block until every process has called this with the same ``name`` (unique per use); at once for one
    process. A barrier of JAX's coordination service (through Orbax's multihost helper), not a device
    collective, so it may wait as long as ``timeout_s``."""
    if jax.process_count() == 1:
        return
    ocp.multihost.get_barrier_sync_fn()(key=f"glide_jax_{name}", timeout_ms=int(timeout_s * 1000))


def mesh_shape(cfg: MeshConfig, num_devices: int) -> Tuple[int, int, int]:
    """Resolve a ``-1`` entry to the remaining devices and check the product."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if sizes.count(-1) > 1:
        raise InputError(f"at most one mesh axis may be -1, got {sizes}")
    if any(s == 0 or s < -1 for s in sizes):
        raise InputError(f"mesh sizes must be positive or -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise InputError(f"{num_devices} devices do not split into a mesh with fixed axes {sizes}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise InputError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {num_devices}")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default: all), with automatic (GSPMD) axis types."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_mesh_spec(
    logical: PartitionSpec, shape: Sequence[int], mesh: Mesh, rules=LOGICAL_RULES
) -> PartitionSpec:
    """Mesh ``PartitionSpec`` for an array of ``shape`` with logical axis names ``logical``.

    Each logical name maps to mesh axes through ``rules``; axes absent from the
    mesh or of size 1 are ignored, an axis already used by an earlier dimension
    is not reused, and trailing axes are dropped until their product divides
    the dimension (so a dimension no axis divides is replicated).
    """
    table = dict(rules)
    used = set()
    out = []
    names = tuple(logical) + (None,) * (len(shape) - len(logical))
    for dim, name in zip(shape, names):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        axes = table[name]
        axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        axes = [a for a in axes if a in mesh.shape and mesh.shape[a] > 1 and a not in used]
        while axes and dim % math.prod(mesh.shape[a] for a in axes):
            axes.pop()
        used.update(axes)
        out.append(None if not axes else (axes[0] if len(axes) == 1 else tuple(axes)))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def tree_shardings(abstract_boxed: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """``NamedSharding`` for every leaf of an (abstract) tree whose leaves may be boxed with logical names."""
    logical = nn.get_partition_spec(abstract_boxed)
    plain = nn.unbox(abstract_boxed)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, logical_to_mesh_spec(spec, leaf.shape, mesh, rules)),
        logical,
        plain,
        is_leaf=_is_spec,
    )


def abstract_with_shardings(abstract_plain: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct``s carrying shardings: the restore target of a sharded checkpoint."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_plain, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes (data and fsdp) larger than one.

    Axes of size one split nothing and are left out of the spec: ``P("fsdp")`` on a
    ``data=1`` mesh, ``P(None)`` on one device.
    """
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)


def jit_step(step_fn: Callable, state_shardings: Any, mesh: Mesh) -> Callable:
    """``step_fn(state, batch)`` compiled with the state's layout in and out, the batch split over
    (data, fsdp), metrics replicated, and the incoming state donated (updated in place)."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,),
    )


def describe(shardings: Any, abstract_plain: Any, limit: int = 8) -> str:
    """A few lines saying how the largest arrays are split, for the log."""
    rows = []
    leaves = jax.tree_util.tree_leaves_with_path(abstract_plain)
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    for (path, leaf), sh in sorted(zip(leaves, specs), key=lambda r: -math.prod(r[0][1].shape))[:limit]:
        rows.append(f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} -> {sh.spec}")
    return "\n".join(rows)
