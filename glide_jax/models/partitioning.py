"""Logical axis names carried by every parameter, and the one table that maps them to a mesh.

Modules never mention mesh axes. Each parameter is created with
``nn.with_logical_partitioning`` and names from the vocabulary below; training
code turns those names into ``PartitionSpec``s with ``LOGICAL_RULES`` (see
``glide_jax.train.sharding``). Changing how a model is split over a pod is a
change of this table only.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn

# Logical names used by the modules.
BATCH = "batch"
EMBED = "embed"  # input features of a dense or convolution (model width)
MLP = "mlp"  # output features of a dense or convolution
HEADS = "heads"  # fused attention projections (q/k/v per head)
VOCAB = "vocab"
CTX = "ctx"  # text positions
KERNEL = "kernel_hw"  # spatial taps of a convolution
NORM = "norm"  # scale/bias vectors of norms
PATCH = "patch"

# Mesh axes: "data" (pure data parallel), "fsdp" (params and batch), "tensor" (model parallel).
MESH_AXES: Tuple[str, ...] = ("data", "fsdp", "tensor")

LOGICAL_RULES: Tuple[Tuple[str, object], ...] = (
    (BATCH, ("data", "fsdp")),
    (EMBED, "fsdp"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (VOCAB, "tensor"),
    (CTX, None),
    (KERNEL, None),
    (NORM, None),
    (PATCH, None),
)


def param_with_axes(init, names: Sequence[str]):
    """An initializer that tags its parameter with logical axis names."""
    return nn.with_logical_partitioning(init, tuple(names))
