"""Random erasure masks for the inpainting fine-tune.

GLIDE's inpainting models are fine-tuned by erasing random regions of training
images and giving the model the remaining pixels plus the mask as extra input
channels (``inpaint_image = image * mask``, ``inpaint_mask = mask``). The paper
does not publish its mask distribution, so this one is ours, chosen to cover
the edits users make: axis-aligned rectangles (box selections), rotated
ellipses (blobs) and thick polyline brush strokes (free-hand painting).

Procedure, for an image of side ``S``: draw a target erased fraction
``t ~ U(min_erase, max_erase)``; repeatedly draw a primitive (rectangle,
ellipse or stroke with equal probability) whose area is about
``U(0.5, 1.5) * (t - erased)`` of the image (at least 2%) and union it into the erased region
unless that would push the erased fraction above ``max_erase``; stop once the
erased fraction reaches ``t``. If 64 proposals were not enough (rare), a square
grown one pixel at a time around a random point tops the erasure up to
``min_erase``. The erased fraction therefore always lies in
``[min_erase, max_erase]`` (up to the last grown square's ring, a few pixels).
Everything is drawn from the ``rng`` passed in, so a mask is a pure function of
its generator's state.

Convention (as in ``glide_text2im``): float32 ``[S, S, 1]``, 1 = keep, 0 = erase.
"""

from __future__ import annotations

import numpy as np

from glide_jax.errors import InputError

MIN_ERASE = 0.1
MAX_ERASE = 0.6
_MAX_PROPOSALS = 64
_MIN_PRIMITIVE = 0.02  # smallest primitive, as a fraction of the image (avoids specks)


def _grid(size: int):
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return x, y


def _rectangle(rng: np.random.Generator, size: int, area: float) -> np.ndarray:
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
    w = int(np.clip(round(np.sqrt(area * aspect)), 1, size))
    h = int(np.clip(round(area / w), 1, size))
    x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
    m = np.zeros((size, size), bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def _ellipse(rng: np.random.Generator, size: int, area: float) -> np.ndarray:
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
    a = np.sqrt(area * aspect / np.pi)
    b = area / (np.pi * a)
    theta = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0, size, size=2)
    x, y = _grid(size)
    dx, dy = x - cx, y - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _stroke(rng: np.random.Generator, size: int, area: float) -> np.ndarray:
    width = rng.uniform(0.04, 0.12) * size
    n_seg = int(rng.integers(2, 8))
    seg_len = max(area / width, 1.0) / n_seg
    p = rng.uniform(0, size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    x, y = _grid(size)
    m = np.zeros((size, size), bool)
    for _ in range(n_seg):
        angle += rng.uniform(-np.pi / 2, np.pi / 2)
        q = np.clip(p + seg_len * np.array([np.cos(angle), np.sin(angle)]), 0, size)
        d = q - p
        t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
        m |= (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 <= (width / 2) ** 2
        p = q
    return m


_PRIMITIVES = (_rectangle, _ellipse, _stroke)


def random_inpaint_mask(
    rng: np.random.Generator, size: int, min_erase: float = MIN_ERASE, max_erase: float = MAX_ERASE
) -> np.ndarray:
    """float32 [size, size, 1] mask, 1 = keep, 0 = erase, erasing a fraction in [min_erase, max_erase]."""
    if not 0 <= min_erase <= max_erase <= 1:
        raise InputError(f"need 0 <= min_erase <= max_erase <= 1, got {min_erase}, {max_erase}")
    total = size * size
    target = rng.uniform(min_erase, max_erase)
    erased = np.zeros((size, size), bool)
    count = 0
    for _ in range(_MAX_PROPOSALS):
        if count >= target * total:
            break
        need = target * total - count
        prim = _PRIMITIVES[rng.integers(len(_PRIMITIVES))]
        area = max(need * rng.uniform(0.5, 1.5), _MIN_PRIMITIVE * total, 1.0)
        new = erased | prim(rng, size, area)
        new_count = int(new.sum())
        if new_count <= max_erase * total:
            erased, count = new, new_count
    if count < min_erase * total:
        cy, cx = rng.integers(0, size, size=2)
        r = 0
        while count < min_erase * total:
            r += 1
            erased[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1] = True
            count = int(erased.sum())
    return (~erased).astype(np.float32)[..., None]
