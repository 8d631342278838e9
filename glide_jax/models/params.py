"""Plain facts about parameter trees, whatever network they belong to."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
from flax import traverse_util


def flat_shapes(params: Any) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
    """``path -> shape`` of a parameter tree of arrays or shape structs, boxed or not: what two trees
    are compared by when one must fit the model of the other."""
    flat = traverse_util.flatten_dict(nn.unbox(params))
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}
