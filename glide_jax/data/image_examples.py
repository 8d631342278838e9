"""One raw image-caption record -> one dataset example, or the name of the reason it is skipped.

This is the per-example code of both ways of building a dataset (the plain generator and
the Apache Beam pipeline in :mod:`glide_jax.data.beam_prepare`), so the two write the same
examples and count the same skips.

The steps, in order; the first that fails names the skip:

1. the reader's own verdict (``unreadable_shard``, ``malformed_caption_row``,
   ``duplicate_key``, ``missing_caption`` for an image no caption row lists);
2. ``missing_image``: a caption without an image file;
3. ``missing_caption``: an image without a caption, or a caption that is empty once
   stripped of surrounding white space;
4. ``corrupt_image``: the header cannot be parsed (not an image, truncated before the size,
   or more pixels than PIL's decompression-bomb limit);
5. the filter on the stored size ``w x h``: ``too_small`` if ``min(w, h) < min_side``,
   ``extreme_aspect`` if ``max(w, h) / min(w, h) > max_aspect`` (a centre crop of such an
   image would lose most of it);
6. ``corrupt_image``: the pixels cannot be decoded (a truncated or garbled body);
7. the image is converted to RGB, its largest centred square cropped and resized with
   Lanczos to ``size`` (``written``).

The caption is stored stripped of surrounding white space, otherwise as given.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from glide_jax.data.caption_shards import RawRecord
from glide_jax.errors import InputError

WRITTEN = "written"
# Every count a build reports, in the order it prints them.
COUNT_NAMES = (WRITTEN, "missing_image", "missing_caption", "corrupt_image", "too_small", "extreme_aspect",
               "duplicate_key", "malformed_caption_row", "unreadable_shard")
DEFAULT_MAX_ASPECT = 2.0


@dataclasses.dataclass(frozen=True)
class ImageFilter:
    """Which images are kept, judged on the stored width and height before cropping."""

    min_side: int  # the shorter side must be at least this many pixels
    max_aspect: float = DEFAULT_MAX_ASPECT  # longer side / shorter side must not exceed this

    def __post_init__(self):
        if self.min_side < 1:
            raise InputError(f"min_side must be at least 1, got {self.min_side}")
        if not self.max_aspect >= 1.0:
            raise InputError(f"max_aspect must be at least 1, got {self.max_aspect}")

    def reject(self, width: int, height: int) -> Optional[str]:
        """The skip name for a ``width x height`` image, or None when it passes."""
        short, long = min(width, height), max(width, height)
        if short < self.min_side:
            return "too_small"
        if long > self.max_aspect * short:
            return "extreme_aspect"
        return None


def center_crop_resize(img: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: the largest centred square of ``img``, resized with Lanczos."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


Example = Dict[str, object]


def to_example(record: RawRecord, size: int, image_filter: ImageFilter) -> Tuple[str, Optional[Example]]:
    """``(WRITTEN, {"image", "caption", "key"})`` or ``(skip name, None)`` for one record."""
    if record.problem is not None:
        return record.problem, None
    if record.image is None:
        return "missing_image", None
    caption = None if record.caption is None else record.caption.strip()
    if not caption:
        return "missing_caption", None
    try:
        img = Image.open(io.BytesIO(record.image))
        width, height = img.size
    except Exception:  # noqa: BLE001 -- PIL's parsers raise many types on arbitrary bytes
        return "corrupt_image", None
    with img:
        rejected = image_filter.reject(width, height)
        if rejected is not None:
            return rejected, None
        try:
            image = center_crop_resize(img, size)
        except Exception:  # noqa: BLE001 -- as above, for the body (truncation raises OSError)
            return "corrupt_image", None
    return WRITTEN, {"image": image, "caption": caption, "key": record.key}


def empty_counts() -> Dict[str, int]:
    return {name: 0 for name in COUNT_NAMES}


def format_counts(counts: Dict[str, int]) -> str:
    """``written=N skipped=M (name=n, ...)`` listing the non-zero skips."""
    skips = {k: v for k, v in counts.items() if k != WRITTEN and v}
    detail = ", ".join(f"{k}={v}" for k, v in skips.items())
    return f"{WRITTEN}={counts.get(WRITTEN, 0)} skipped={sum(skips.values())}" + (f" ({detail})" if detail else "")
