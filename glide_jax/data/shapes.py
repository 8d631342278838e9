"""Procedural captioned shapes: the training data of the project's tiny default model.

Why a synthetic set: a text-to-image diffusion model can only be trained and
*judged* on CPU if the images are simple and the captions are exactly
checkable. Every image here is one or two flat-coloured shapes on a plain
light-grey background ``BACKGROUND = (200, 200, 200)`` with no antialiasing, so
an evaluator can recover each object by colour, and every caption follows one
small grammar (parsed back by :func:`parse_caption`)::

    one object:   a [small |large ]COLOR SHAPE
    two objects:  a COLOR SHAPE RELATION a COLOR SHAPE

with the article ``an`` before a vowel ("an orange square"). In two-object
scenes the colours differ, the first object stands in RELATION to the second,
their bounding boxes are separated by at least ``MIN_GAP`` along the relation's
axis and their centres differ by at most ``MAX_CROSS`` across it, and every
object keeps ``MARGIN`` from the frame. Coordinates are fractions of the image
side (``x`` to the right, ``y`` downwards), so the same scene renders at any
size (32, 64, 256, ...); pixels are coloured when their centre lies inside the
shape.

Held-out split (compositional generalisation): the (colour, shape) pairs in
``HELDOUT_PAIRS`` never appear in *two-object* training scenes (they do appear
alone), and ``HELDOUT_COMBOS`` -- a fixed, seeded choice of full two-object
combinations together with their mirror images ("A left of B" = "B right of
A") -- never appear in training either. ``split="heldout"`` samples only those.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from glide_jax.errors import InputError

BACKGROUND: Tuple[int, int, int] = (200, 200, 200)
COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (20, 50, 220),
    "yellow": (240, 220, 20),
    "purple": (140, 30, 170),
    "orange": (245, 130, 0),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: Tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
# Extent (side of the bounding square, fraction of the image side) by size word;
# None is an unsized single object. The bands do not overlap, so size is checkable.
SIZES: Dict[Optional[str], Tuple[float, float]] = {
    "small": (0.18, 0.26),
    None: (0.32, 0.40),
    "large": (0.50, 0.62),
}
PAIR_EXTENT: Tuple[float, float] = (0.22, 0.32)  # objects of two-object scenes
PAIR_LAYOUTS: Tuple[str, ...] = ("free", "halves")  # see place_pair
MARGIN = 0.08
MIN_GAP = 0.06
MAX_CROSS = 0.06
P_TWO_OBJECTS = 0.5

HELDOUT_PAIRS: FrozenSet[Tuple[str, str]] = frozenset(
    {("red", "triangle"), ("green", "square"), ("blue", "circle"), ("orange", "triangle")}
)
# Each relation's converse: "A left of B" is the scene "B right of A".
MIRROR: Dict[str, str] = {"to the left of": "to the right of", "to the right of": "to the left of",
                          "above": "below", "below": "above"}
_HELDOUT_SEED = 20240501
_NUM_HELDOUT_CLASSES = 32  # each class is a combination plus its mirror image

Combo = Tuple[str, str, str, str, str]  # (color1, shape1, relation, color2, shape2)


@dataclass(frozen=True)
class ObjectSpec:
    """What a caption says about one object."""

    color: str
    shape: str
    size: Optional[str] = None  # "small", "large" or None (only single objects carry one)


class ParsedCaption(NamedTuple):
    objects: List[ObjectSpec]
    relation: Optional[str]  # None for one-object captions


@dataclass(frozen=True)
class PlacedObject:
    """An object with its geometry: centre and extent as fractions of the image side."""

    color: str
    shape: str
    size: Optional[str]
    cx: float
    cy: float
    extent: float

    @property
    def bbox(self) -> Tuple[float, float, float, float]:
        h = self.extent / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


# ----------------------------------------------------------------------------- captions


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: ObjectSpec) -> str:
    words = ([obj.size] if obj.size else []) + [obj.color, obj.shape]
    return f"{article(words[0])} {' '.join(words)}"


def format_caption(objects: List[ObjectSpec], relation: Optional[str] = None) -> str:
    """The caption of one object, or of two objects in ``relation`` (inverse of parse_caption)."""
    if len(objects) == 1 and relation is None:
        return _noun_phrase(objects[0])
    if len(objects) == 2 and relation in RELATIONS:
        if any(o.size for o in objects):
            raise InputError("two-object captions carry no size words")
        return f"{_noun_phrase(objects[0])} {relation} {_noun_phrase(objects[1])}"
    raise InputError(f"need one object without relation or two with a relation, got {objects}, {relation!r}")


_C = "|".join(COLORS)
_S = "|".join(SHAPES)
_NP1 = rf"(?P<art>an?) (?:(?P<size>small|large) )?(?P<color>{_C}) (?P<shape>{_S})"
_NP = r"(?P<art{i}>an?) (?P<color{i}>" + _C + r") (?P<shape{i}>" + _S + r")"
_REL = "|".join(re.escape(r) for r in RELATIONS)
ONE_OBJECT_RE = re.compile(rf"^{_NP1}$")
TWO_OBJECT_RE = re.compile(rf"^{_NP.format(i=1)} (?P<rel>{_REL}) {_NP.format(i=2)}$")


def parse_caption(text: str) -> ParsedCaption:
    """Parse a caption of the grammar above (case and spacing are normalised).

    Raises ValueError for anything outside the grammar, including a wrong article.
    """
    t = " ".join(text.lower().split())
    m = ONE_OBJECT_RE.match(t)
    if m:
        objs = [ObjectSpec(m["color"], m["shape"], m["size"])]
        arts, rel = [m["art"]], None
    else:
        m = TWO_OBJECT_RE.match(t)
        if not m:
            raise InputError(f"caption outside the shapes grammar: {text!r}")
        objs = [ObjectSpec(m["color1"], m["shape1"]), ObjectSpec(m["color2"], m["shape2"])]
        arts, rel = [m["art1"], m["art2"]], m["rel"]
    for a, o in zip(arts, objs):
        if a != article(o.size or o.color):
            raise InputError(f"wrong article {a!r} in {text!r}")
    return ParsedCaption(objs, rel)


# ----------------------------------------------------------------------------- held-out split


def _canonical(c: Combo) -> Combo:
    c1, s1, rel, c2, s2 = c
    return c if rel in ("to the left of", "above") else (c2, s2, MIRROR[rel], c1, s1)


def _all_combos() -> List[Combo]:
    objs = [(c, s) for c in COLORS for s in SHAPES]
    return [
        (a[0], a[1], r, b[0], b[1])
        for a, b in itertools.product(objs, objs)
        if a[0] != b[0]
        for r in RELATIONS
    ]


def _build_heldout() -> Tuple[List[Combo], List[Combo]]:
    combos = _all_combos()
    pair = [c for c in combos if (c[0], c[1]) in HELDOUT_PAIRS or (c[3], c[4]) in HELDOUT_PAIRS]
    pair_set = set(pair)
    rest = sorted({_canonical(c) for c in combos if c not in pair_set})
    rng = np.random.default_rng(_HELDOUT_SEED)
    chosen = [rest[i] for i in rng.permutation(len(rest))[:_NUM_HELDOUT_CLASSES]]
    full = []
    for c in chosen:
        full += [c, (c[3], c[4], MIRROR[c[2]], c[0], c[1])]
    return pair, sorted(full)


HELDOUT_PAIR_COMBOS, HELDOUT_COMBOS = _build_heldout()
_HELDOUT_COMBO_SET = frozenset(HELDOUT_COMBOS)
_TRAIN_PAIR_OBJECTS = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]


def _fixed_order(combos: list, n: int, kind: str, seed_offset: int) -> list:
    """The first ``n`` of ``combos`` in one fixed shuffled order (the same for every call)."""
    if n > len(combos):
        raise InputError(f"only {len(combos)} {kind} prompts exist, asked for {n}")
    return [combos[i] for i in np.random.default_rng(_HELDOUT_SEED + seed_offset).permutation(len(combos))[:n]]


def single_prompts(n: int) -> List[str]:
    """``n`` distinct one-object captions ("a red circle", "a small blue square"), the same for every call.

    Every colour, shape and size word of the grammar; all of them occur in
    training (only two-object scenes are held out), so they measure whether the
    model draws what a caption names, apart from relations.
    """
    combos = [(c, s, z) for c in COLORS for s in SHAPES for z in SIZES]
    return [format_caption([ObjectSpec(*c)]) for c in _fixed_order(combos, n, "one-object", 3)]


def heldout_prompts(n: int) -> List[str]:
    """``n`` distinct held-out captions, the same for every call: pair and combination
    hold-outs alternate, each in a fixed shuffled order."""
    rng = np.random.default_rng(_HELDOUT_SEED + 1)
    lists = [[HELDOUT_PAIR_COMBOS[i] for i in rng.permutation(len(HELDOUT_PAIR_COMBOS))],
             [HELDOUT_COMBOS[i] for i in rng.permutation(len(HELDOUT_COMBOS))]]
    merged = [c for pair in itertools.zip_longest(*lists) for c in pair if c is not None]
    if n > len(merged):
        raise InputError(f"only {len(merged)} held-out prompts exist, asked for {n}")
    return [format_caption([ObjectSpec(c[0], c[1]), ObjectSpec(c[3], c[4])], c[2]) for c in merged[:n]]


# ----------------------------------------------------------------------------- scenes


def place_pair(rng: np.random.Generator, a: Tuple[str, str], b: Tuple[str, str], relation: str,
               layout: str = "free") -> List[PlacedObject]:
    """Place ``a`` RELATION ``b`` with separated bounding boxes and aligned centres.

    ``layout="free"``: the pair sits anywhere along the relation's axis.
    ``"halves"``: each object lies wholly in its own half of that axis (in the
    free layout one object of about three pairs in ten crosses the midline), so
    the relation alone decides which half of the image gets which colour
    (the shapes project's base curriculum uses it; projects/shapes/README.md).
    """
    if layout not in PAIR_LAYOUTS:
        raise InputError(f"pair layout must be one of {PAIR_LAYOUTS}, got {layout!r}")
    d = rng.uniform(*PAIR_EXTENT, size=2)
    first_is_a = relation in ("to the left of", "above")  # which object comes first on the main axis
    d_lo, d_hi = (d[0], d[1]) if first_is_a else (d[1], d[0])
    if layout == "halves":
        u = rng.uniform(0, 1, size=2)
        start_lo = MARGIN + (0.5 - MIN_GAP / 2 - d_lo - MARGIN) * u[0]
        start_hi = 0.5 + MIN_GAP / 2 + (0.5 - MIN_GAP / 2 - d_hi - MARGIN) * u[1]
    else:
        free = 1 - 2 * MARGIN - d_lo - d_hi - MIN_GAP
        u = np.sort(rng.uniform(0, 1, size=2))
        start_lo = MARGIN + free * u[0]
        start_hi = start_lo + d_lo + MIN_GAP + free * (u[1] - u[0])
    main = (start_lo + d_lo / 2, start_hi + d_hi / 2)
    if not first_is_a:
        main = (main[1], main[0])
    half_j = MAX_CROSS / 2
    lo = MARGIN + d.max() / 2 + half_j
    c = rng.uniform(lo, 1 - lo)
    cross = c + rng.uniform(-half_j, half_j, size=2)
    horizontal = relation in ("to the left of", "to the right of")
    out = []
    for (color, shape), m, x, ext in zip((a, b), main, cross, d):
        cx, cy = (m, x) if horizontal else (x, m)
        out.append(PlacedObject(color, shape, None, float(cx), float(cy), float(ext)))
    return out


def place_single(rng: np.random.Generator, obj: ObjectSpec) -> PlacedObject:
    """Place one object of its size band anywhere (keeping ``MARGIN`` from the frame)."""
    ext = rng.uniform(*SIZES[obj.size])
    lo, hi = MARGIN + ext / 2, 1 - MARGIN - ext / 2
    centre = rng.uniform(lo, hi, size=2)
    return PlacedObject(obj.color, obj.shape, obj.size, float(centre[0]), float(centre[1]), float(ext))


def check_relations(relations: Sequence[str], name: str = "relations") -> Tuple[str, ...]:
    """``relations`` as a tuple after checking it is a non-empty set of known relation phrases
    (``name``: what the error message calls it)."""
    relations = tuple(relations)
    unknown = [r for r in relations if r not in RELATIONS]
    if not relations or unknown or len(set(relations)) != len(relations):
        raise InputError(f"{name} must be distinct items of {RELATIONS}, got {relations!r}")
    return relations


def sample_scene(rng: np.random.Generator, split: str = "train", p_two: float = P_TWO_OBJECTS,
                 pair_layout: str = "free", relations: Sequence[str] = RELATIONS):
    """Draw a scene: (placed objects, relation or None). Geometry is size-independent.

    ``p_two``: the share of two-object scenes in the training split.
    ``pair_layout`` goes to ``place_pair``.

    ``relations``: the relations two-object training scenes are drawn from (held-out
    scenes keep all four). Why: with all four, the place of each noun phrase is the
    exclusive-or of its order and the relation's direction, with no first-order signal
    to start learning from; trained on "above" and "to the left of" alone, "the first
    phrase goes first" is learnt quickly, and the mirrored relations can be added later
    (projects/shapes/README.md). All four, the default, gives the full grammar.
    """
    relations = check_relations(relations)
    if split == "heldout":
        pool = HELDOUT_PAIR_COMBOS if rng.random() < 0.5 else HELDOUT_COMBOS
        c = pool[rng.integers(len(pool))]
        return place_pair(rng, (c[0], c[1]), (c[3], c[4]), c[2], pair_layout), c[2]
    if split != "train":
        raise InputError(f"split must be 'train' or 'heldout', got {split!r}")
    if rng.random() >= p_two:
        color = list(COLORS)[rng.integers(len(COLORS))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        size = (None, "small", "large")[rng.integers(3)]
        return [place_single(rng, ObjectSpec(color, shape, size))], None
    while True:
        i, j = rng.integers(len(_TRAIN_PAIR_OBJECTS), size=2)
        a, b = _TRAIN_PAIR_OBJECTS[i], _TRAIN_PAIR_OBJECTS[j]
        rel = relations[rng.integers(len(relations))]
        if a[0] != b[0] and (a[0], a[1], rel, b[0], b[1]) not in _HELDOUT_COMBO_SET:
            return place_pair(rng, a, b, rel, pair_layout), rel


def shape_mask(obj: PlacedObject, size: int) -> np.ndarray:
    """Boolean [size, size] mask of the pixels whose centre lies inside ``obj``."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    dx, dy, h = x - obj.cx, y - obj.cy, obj.extent / 2
    if obj.shape == "circle":
        return dx * dx + dy * dy <= h * h
    if obj.shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if obj.shape == "triangle":  # apex up, base at the bottom of the bounding square
        return (dy <= h) & (np.abs(dx) <= (dy + h) / 2)
    raise InputError(f"unknown shape {obj.shape!r}")


def render_scene(objects: List[PlacedObject], size: int) -> np.ndarray:
    """uint8 [size, size, 3] image of the objects on the background."""
    img = np.empty((size, size, 3), np.uint8)
    img[...] = BACKGROUND
    for obj in objects:
        img[shape_mask(obj, size)] = COLORS[obj.color]
    return img


def render_example(rng: np.random.Generator, size: int, split: str = "train", p_two: float = P_TWO_OBJECTS,
                   pair_layout: str = "free", relations: Sequence[str] = RELATIONS):
    """One example: (uint8 [size, size, 3] image, caption, metadata).

    Metadata: ``{"objects": [{color, shape, size, center, extent, bbox}], "relation"}``
    with centre, extent and bbox (x0, y0, x1, y1) as fractions of the image side.
    """
    if size < 16:
        raise InputError(f"image size {size} is too small for legible shapes (need >= 16)")
    objects, relation = sample_scene(rng, split, p_two, pair_layout, relations)
    caption = format_caption([ObjectSpec(o.color, o.shape, o.size) for o in objects], relation)
    meta = {
        "objects": [
            {"color": o.color, "shape": o.shape, "size": o.size, "center": (o.cx, o.cy), "extent": o.extent, "bbox": o.bbox}
            for o in objects
        ],
        "relation": relation,
    }
    return render_scene(objects, size), caption, meta
