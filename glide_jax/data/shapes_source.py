"""The procedural captioned-shapes training source and its own settings (``data.shapes``).

Example ``i`` is rendered from ``default_rng([seed, split_id, i])`` on demand,
exactly the example the TFDS builder (``glide_jax.data.tfds_builders.CaptionedShapes``)
would write, so a tiny run needs no preparation step and no disk, and switching
to the prepared dataset changes nothing but speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from glide_jax.data import shapes
from glide_jax.errors import InputError


@dataclass(frozen=True)
class ShapesDataConfig:
    """The scene mix of the procedural source: ``data.shapes`` of a training config.

    Only the number of examples defines the index space a resumed run's
    iterator position refers to; the other three may change between the
    phases of one run (a curriculum, see :class:`ShapesSource`).
    """

    num_examples: int = 20000  # size of the procedural training set (indices 0..num_examples-1)
    two_object_fraction: float = 0.5  # share of two-object scenes (the rest: one object with a size)
    pair_layout: str = "free"  # "halves" puts each object of a related pair wholly in its half of the axis
    relations: Tuple[str, ...] = shapes.RELATIONS  # relations of two-object training scenes

    def __post_init__(self):
        if self.num_examples < 1:
            raise InputError(f"data.shapes.num_examples must be positive, got {self.num_examples}")
        if not 0.0 <= self.two_object_fraction <= 1.0:
            raise InputError(f"data.shapes.two_object_fraction must be in [0, 1], got {self.two_object_fraction}")
        if self.pair_layout not in shapes.PAIR_LAYOUTS:
            raise InputError(f"data.shapes.pair_layout must be one of {shapes.PAIR_LAYOUTS}, got {self.pair_layout!r}")
        shapes.check_relations(self.relations, "data.shapes.relations")


class ShapesSource:
    """Random-access procedural captioned shapes (``{"image": uint8 [S, S, 3], "caption": bytes}``)."""

    def __init__(self, num_examples: int, size: int, seed: int = 0, split: str = "train",
                 p_two: float = shapes.P_TWO_OBJECTS, pair_layout: str = "free",
                 relations: Sequence[str] = shapes.RELATIONS):
        self.num_examples, self.size, self.seed, self.split = int(num_examples), int(size), int(seed), split
        if not 0.0 <= p_two <= 1.0:
            raise InputError(f"the fraction of two-object scenes must be in [0, 1], got {p_two}")
        if pair_layout not in shapes.PAIR_LAYOUTS:
            raise InputError(f"pair layout must be one of {shapes.PAIR_LAYOUTS}, got {pair_layout!r}")
        if split not in ("train", "heldout"):
            raise InputError(f"the shapes source has the splits 'train' and 'heldout', got {split!r}")
        self.p_two, self.pair_layout = float(p_two), pair_layout
        self.relations = shapes.check_relations(relations)
        self._split_id = {"train": 0, "heldout": 1}[split]

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < self.num_examples:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self._split_id, int(index)])
        image, caption, _ = shapes.render_example(rng, self.size, self.split, self.p_two, self.pair_layout,
                                                self.relations)
        return {"image": image, "caption": caption.encode("utf-8")}

    def __repr__(self) -> str:
        # The repr is what grain checks when a run resumes: it names the index space (which examples
        # exist and their random streams), not the scene mix, so the share of two-object scenes, the pair
        # layout and the relations may be changed between resumed runs (a curriculum) while the iterator
        # position stays valid.
        return f"ShapesSource(n={self.num_examples}, size={self.size}, seed={self.seed}, split={self.split})"


def open_shapes(data, image_size: int) -> ShapesSource:
    """The source a ``DataConfig`` with ``source="shapes"`` reads: its ``shapes`` section at the model's size."""
    mix: ShapesDataConfig = data.shapes
    return ShapesSource(mix.num_examples, image_size, data.seed, data.split, mix.two_object_fraction,
                        mix.pair_layout, mix.relations)
