"""Scoring generated captioned-shapes images against their captions, without a learned model.

Why: the embedded models are trained on :mod:`glide_jax.data.shapes`, whose
captions are exactly checkable -- so its samples can be *graded*, not just
looked at. A learned judge (CLIP, a classifier) would need its own training and
would add its own errors; the scenes are flat colours on a known grey
background, so plain numpy image analysis is enough and fully deterministic.

How an image is analysed (:func:`analyse`):

1. **Background**: the median of the outer border (objects keep ``MARGIN``
   from the frame) if it is within ``BG_TOLERANCE`` of ``shapes.BACKGROUND``,
   else the nominal grey.
2. **Colour unmixing**: blur and antialiasing mix an object's colour linearly
   with the background, so each pixel ``p`` is explained as ``bg + a (c - bg)``
   for every palette colour ``c`` (``a`` clamped to [0, 1]). The colour whose
   segment passes closest wins; the pixel is foreground if its ``a >= 0.5``
   (nearer the colour than the background) and the residual is at most
   ``MAX_RESIDUAL`` (else it is an off-palette pixel and ignored). Unlike a
   plain nearest-colour rule, half-blurred edges keep their colour (a red/grey
   blend is not mistaken for orange) and white/black separate cleanly from grey.
3. **Objects**: per colour, holes are filled and connected components
   (8-connectivity, run-length union-find) are kept when their area is at
   least ``MIN_AREA`` of the image and they survive a 3x3 morphological
   opening (which removes noise specks and one-pixel rims but, being used only
   as a seed, leaves the kept object's own pixels untouched).
4. **Per object**: the centroid; the *shape* from two moment features of its
   soft coverage (the object plus the partially covered rim around it), which
   blur leaves almost unchanged where bounding-box fill ratios and template
   IoUs break down at 32 px: vertical skewness (a triangle's mass sits low)
   and the ratio of the fourth cumulants along the diagonals and the axes
   (0.5 for a square, 1 for a circle); the *extent* as the side of the ideal
   shape with the same soft area (blur moves mass but keeps its total, so this
   is unbiased where the bounding box loses a blurred triangle's corners);
   the *size word* whose ``shapes.SIZES`` band is nearest (cut points halfway).

Measured on 1000 ``render_example`` scenes per size (both splits): 99.7% of
clean 32-px renders are graded fully correct, 100% at 64 and 256 px; after a
3x3 box blur plus Gaussian noise of 8 levels, or a colour cast of up to 15
levels plus noise, 99.4-99.7% at 32 px and 100% above.

:func:`score` matches caption objects to detections by colour and reports, per
attribute, ``count``, ``color``, ``shape``, ``size`` (None unless the caption
states a size), ``position`` (None for one-object captions; the first object's
centroid must be displaced from the second's in the relation's direction, and
more along that axis than across it) and ``correct`` (all applicable ones).
:func:`score_inpaint` adds the inpainting checks; :func:`aggregate` averages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from glide_jax.data import shapes
from glide_jax.errors import InputError

BG_TOLERANCE = 40.0  # RGB distance within which the border median is accepted as the background
MAX_RESIDUAL = 60.0  # RGB distance from the nearest colour/background mixing line for a foreground pixel
MIN_ALPHA = 0.5  # a pixel is foreground when it is at least half-way from the background to its colour
MIN_AREA = 0.004  # smallest object, as a fraction of the image area (a small triangle is ~0.016)
RIM = 2  # pixels around an object whose partial coverage counts towards its moments and area
SOFT_ALPHA = 0.15  # rim coverage below this is treated as background noise (moments and area)
# Shape thresholds (see shape_features), set between the values measured on clean and blurred renders
# at 32-256 px: |skew| is 0.23-0.69 for triangles and <= 0.12 otherwise; the kurtosis ratio is
# 0.50-0.70 for squares and 0.75-1.4 for circles (blurring a 32-px image twice pushes squares up to 0.9).
TRIANGLE_SKEW = 0.18
SQUARE_RATIO = 0.72
# Extent cut points between the SIZES bands: small < 0.29 <= unsized < 0.45 <= large.
_SIZE_CUTS = ((shapes.SIZES["small"][1] + shapes.SIZES[None][0]) / 2,
              (shapes.SIZES[None][1] + shapes.SIZES["large"][0]) / 2)
# The keep region of an inpainting output may differ from the source by at most this mean absolute
# difference (8-bit levels): the samplers paste the known pixels at every step, so only the last
# step's rounding and the resampling between stages (64 -> 256) can move them.
KEEP_TOLERANCE = 4.0
IN_HOLE = 0.5  # an object "fills the hole" when at least this fraction of its pixels lie in the erased region
ATTRIBUTES = ("count", "color", "shape", "size", "position")
INPAINT_ATTRIBUTES = ("keep", "fill")

_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}  # area / extent**2 of the ideal shapes
_NAMES = list(shapes.COLORS)
_PALETTE = np.array([shapes.COLORS[c] for c in _NAMES], np.float32)


@dataclass(frozen=True)
class Detection:
    """One detected object; geometry in fractions of the image side (x right, y down)."""

    color: str
    shape: str
    size: Optional[str]  # "small", None (unsized band) or "large"
    center: Tuple[float, float]
    extent: float  # side of the ideal shape with the object's (soft) area: blur-proof, unlike the bbox
    area: float  # fraction of the image area (pixels at least half covered)
    bbox: Tuple[float, float, float, float]  # x0, y0, x1, y1 of those pixels
    skew: float  # shape features, see shape_features
    kurt_ratio: float


# ----------------------------------------------------------------------------- numpy image ops


def _shift_reduce(mask: np.ndarray, op, fill: bool) -> np.ndarray:
    h, w = mask.shape
    p = np.pad(mask, 1, constant_values=fill)
    out = p[1:h + 1, 1:w + 1].copy()
    for dy in range(3):
        for dx in range(3):
            op(out, p[dy:dy + h, dx:dx + w], out=out)
    return out


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion (outside the image counts as set, so borders do not erode)."""
    return _shift_reduce(mask, np.logical_and, True)


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    return _shift_reduce(mask, np.logical_or, False)


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = dilate(mask)
    return mask


def label_components(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: (int32 labels with 0 = unset, count).

    Run-length union-find: runs of set pixels are found per row with numpy and
    runs in adjacent rows that touch are merged, so the Python work is
    proportional to the number of runs (a few per object row), not of pixels.
    """
    h, w = mask.shape
    d = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(d == 1)
    ends = np.nonzero(d == -1)[1]  # exclusive; row-major order pairs them with the starts
    n = len(rows)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows, np.arange(h + 1))
    for r in range(h - 1):
        i, i_end = row_first[r], row_first[r + 1]
        j, j_end = row_first[r + 1], row_first[r + 2]
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals included
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)], np.int64)
    uniq, comp = np.unique(roots, return_inverse=True)
    labels = np.zeros(h * w, np.int32)
    lengths = ends - starts
    flat = np.repeat(rows * w + starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(lengths.sum())
    labels[flat] = np.repeat(comp + 1, lengths)
    return labels.reshape(h, w), len(uniq)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every unset region that does not reach the image border set."""
    labels, _ = label_components(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, border)


# ----------------------------------------------------------------------------- analysis


def _background(img: np.ndarray) -> np.ndarray:
    b = max(1, min(img.shape[:2]) // 32)
    border = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                             img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)])
    est = np.median(border, axis=0)
    nominal = np.array(shapes.BACKGROUND, np.float32)
    return est if np.linalg.norm(est - nominal) <= BG_TOLERANCE else nominal


def _unmix(img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per pixel and palette colour: mixing weight alpha in [0, 1] and residual, both [H, W, K]."""
    img = img.astype(np.float32)
    bg = _background(img)
    d = _PALETTE - bg  # [K, 3] mixing directions
    q = img - bg  # [H, W, 3]
    dd = (d * d).sum(-1)
    qd = q @ d.T  # [H, W, K]
    alpha = np.clip(qd / dd, 0.0, 1.0)
    resid2 = (q * q).sum(-1, keepdims=True) - 2 * alpha * qd + alpha * alpha * dd  # |q - alpha d|^2
    return alpha, np.sqrt(np.maximum(resid2, 0.0))


def _classify(alpha: np.ndarray, resid: np.ndarray) -> np.ndarray:
    best = np.argmin(resid, axis=-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, best[..., None], -1)[..., 0]
    return np.where((a >= MIN_ALPHA) & (r <= MAX_RESIDUAL), best, -1)


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """int [H, W] colour index into ``COLORS`` order for foreground pixels, -1 elsewhere (see module doc)."""
    return _classify(*_unmix(_as_image(image)))


def shape_features(weights: np.ndarray) -> Tuple[float, float]:
    """(vertical skewness, diagonal/axis fourth-cumulant ratio) of a non-negative [H, W] weight map.

    Cumulants add under convolution and a Gaussian-like blur has none of order
    3 or 4, so both features survive blur (only the variance in the skewness's
    denominator grows). An apex-up triangle has skewness -2*sqrt(2)/5 = -0.57
    (apex-down +0.57), circles and squares 0. A square's fourth cumulant along
    its diagonals is half that along its axes (triangular vs uniform marginal),
    a circle's is the same in every direction: ratio 0.5 vs 1.
    """
    ys, xs = np.nonzero(weights > 0)
    w = weights[ys, xs].astype(np.float64)
    m = w.sum()
    x, y = xs - (xs * w).sum() / m, ys - (ys * w).sum() / m

    def cumulants(v):
        v2 = (w * v * v).sum() / m
        return v2, (w * v ** 3).sum() / m, (w * v ** 4).sum() / m - 3 * v2 * v2

    vy, m3y, ky = cumulants(y)
    kx, ku, kv = (cumulants(v)[2] for v in (x, (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)))
    skew = m3y / vy ** 1.5 if vy > 0 else 0.0
    ratio = (ku + kv) / (kx + ky) if kx + ky < 0 else 1.0
    return float(skew), float(ratio)


def classify_shape(skew: float, kurt_ratio: float) -> str:
    """Triangle if clearly skewed vertically, else square if flatter along its diagonals than its axes."""
    if abs(skew) >= TRIANGLE_SKEW:
        return "triangle"
    return "square" if kurt_ratio < SQUARE_RATIO else "circle"


def size_word(extent: float) -> Optional[str]:
    """The caption size word ("small", None, "large") whose SIZES band is nearest to ``extent``."""
    return "small" if extent < _SIZE_CUTS[0] else (None if extent < _SIZE_CUTS[1] else "large")


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 32:
        raise InputError(f"need an RGB image [H, W, 3] with H, W >= 32, got shape {img.shape}")
    return img


def _detect(img: np.ndarray) -> List[Tuple[Detection, np.ndarray]]:
    """(detection, boolean pixel mask) per object, largest first."""
    h, w = img.shape[:2]
    side = np.array([w, h], np.float64)
    alpha, resid = _unmix(img)
    cls = _classify(alpha, resid)
    found = []
    for k, name in enumerate(_NAMES):
        m = cls == k
        if m.sum() < MIN_AREA * h * w:
            continue
        seeds = dilate(erode(m))
        if seeds.sum() < MIN_AREA * h * w / 4:  # nothing solid: noise (spares labelling thousands of specks)
            continue
        labels, n = label_components(fill_holes(m))
        # soft coverage of this colour: keeps the blurred rim, drops background noise
        soft = np.where((resid[..., k] <= MAX_RESIDUAL) & (alpha[..., k] >= SOFT_ALPHA) & (cls < 0), alpha[..., k], 0.0)
        for lab in range(1, n + 1):
            obj = labels == lab
            area = int(obj.sum())
            if area < MIN_AREA * h * w or not (obj & seeds).any():
                continue
            ys, xs = np.nonzero(obj)
            weights = np.where(_grow(obj, RIM), np.maximum(soft, obj), 0.0)
            skew, ratio = shape_features(weights)
            shape = classify_shape(skew, ratio)
            extent = float(np.sqrt(weights.sum() / _FILL[shape] / (h * w)))
            center = tuple(float(c) for c in (np.array([xs.mean(), ys.mean()]) + 0.5) / side)
            bbox = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
            det = Detection(name, shape, size_word(extent), center, extent, area / (h * w),
                            tuple(float(b) for b in bbox), skew, ratio)
            found.append((det, obj))
    return sorted(found, key=lambda f: -f[0].area)


def analyse(image: np.ndarray) -> List[Detection]:
    """The objects in a uint8 [H, W, 3] shapes image, largest first."""
    return [d for d, _ in _detect(_as_image(image))]


# ----------------------------------------------------------------------------- scoring


def relation_holds(first: Tuple[float, float], second: Tuple[float, float], relation: str) -> bool:
    """``first`` RELATION ``second`` for centroids (x right, y down): right direction, dominant axis."""
    dx, dy = first[0] - second[0], first[1] - second[1]
    along, across = {"to the left of": (-dx, dy), "to the right of": (dx, dy),
                     "above": (-dy, dx), "below": (dy, dx)}[relation]
    return along > 0 and along >= abs(across)


def _match(specs, found: List[Detection]) -> List[Optional[Detection]]:
    """Each caption object's detection: same colour, preferring the right shape, then the largest."""
    free = list(found)
    out = []
    for spec in specs:
        cands = [d for d in free if d.color == spec.color]
        pick = max(cands, key=lambda d: (d.shape == spec.shape, d.area), default=None)
        if pick is not None:
            free.remove(pick)
        out.append(pick)
    return out


def score(image: np.ndarray, caption: str, detections: Optional[List[Detection]] = None) -> dict:
    """Per-attribute booleans (None = not applicable), ``correct``, and the detected ``objects``."""
    parsed = shapes.parse_caption(caption)
    found = analyse(image) if detections is None else detections
    matched = _match(parsed.objects, found)
    ok = [m is not None for m in matched]
    out = {
        "count": len(found) == len(parsed.objects),
        "color": all(ok),
        "shape": all(m is not None and m.shape == s.shape for m, s in zip(matched, parsed.objects)),
        "size": None,
        "position": None,
    }
    if any(s.size for s in parsed.objects):
        out["size"] = all(m is not None and m.size == s.size for m, s in zip(matched, parsed.objects))
    if parsed.relation is not None:
        out["position"] = all(ok) and relation_holds(matched[0].center, matched[1].center, parsed.relation)
    out["correct"] = all(v for v in out.values() if v is not None)
    out["objects"] = [asdict(d) for d in found]
    return out


def _keep_mask(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} does not match the image size {shape}")
    return m.astype(np.float32) >= 0.5


def score_inpaint(output: np.ndarray, source: np.ndarray, mask: np.ndarray, caption: str) -> dict:
    """:func:`score` of the whole output plus two inpainting checks (mask: 1 = keep, 0 = filled in).

    ``keep``: the mean absolute difference to ``source`` over the keep region
    (``keep_mad``, 8-bit levels) is at most ``KEEP_TOLERANCE``. ``fill``: at
    least one object lies mostly (``IN_HOLE`` of its pixels) in the erased
    region, and every such object has the colour and shape of a caption object.
    ``correct`` requires both and a correct scene.
    """
    out_img, src = _as_image(output), _as_image(source)
    if out_img.shape != src.shape:
        raise InputError(f"output {out_img.shape} and source {src.shape} differ in shape")
    keep = _keep_mask(mask, out_img.shape[:2])
    diff = np.abs(out_img.astype(np.float32) - src.astype(np.float32)).mean(-1)
    mad = float(diff[keep].mean()) if keep.any() else 0.0
    found = _detect(out_img)
    result = score(out_img, caption, [d for d, _ in found])
    wanted = {(o.color, o.shape) for o in shapes.parse_caption(caption).objects}
    in_hole = [d for d, pix in found if (pix & ~keep).sum() >= IN_HOLE * pix.sum()]
    result["keep_mad"] = mad
    result["keep"] = mad <= KEEP_TOLERANCE
    result["fill"] = bool(in_hole) and all((d.color, d.shape) in wanted for d in in_hole)
    result["correct"] = result["correct"] and result["keep"] and result["fill"]
    return result


def aggregate(scores: Sequence[dict]) -> dict:
    """``accuracy`` (fraction correct), ``per_attribute`` (fraction true among applicable), ``n``."""
    if not scores:
        raise InputError("aggregate needs at least one score")
    per = {}
    for attr in ATTRIBUTES + INPAINT_ATTRIBUTES:
        vals = [s[attr] for s in scores if s.get(attr) is not None]
        if vals:
            per[attr] = float(np.mean(vals))
    out = {"accuracy": float(np.mean([s["correct"] for s in scores])), "per_attribute": per, "n": len(scores)}
    mads = [s["keep_mad"] for s in scores if "keep_mad" in s]
    if mads:
        out["mean_keep_mad"] = float(np.mean(mads))
    return out
