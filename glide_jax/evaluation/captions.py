"""The captions an evaluation samples, from one spec string: ``read_captions(spec, n)``.

Specs:

* ``shapes:heldout[:N]`` - the captioned-shapes grammar's held-out two-object captions
  (:func:`glide_jax.data.shapes.heldout_prompts`, a fixed order), ``shapes:single[:N]`` its
  one-object captions; ``N`` caps the count;
* a ``.txt`` file - one caption a line (blank lines skipped);
* a ``.jsonl`` file - one JSON object a line with a ``"caption"`` (or ``"text"``) field, or a JSON
  string, as ``captions.jsonl`` files hold them;
* anything else - image-caption shards as ``tools.prepare_dataset`` reads them
  (:func:`glide_jax.data.caption_shards.find_shards`: a folder with ``captions.jsonl``, a WebDataset
  ``.tar``, a folder of them, or a glob); only the captions are used, in shard order.

Samples cycle through the captions when an evaluation asks for more samples than there are
captions (sample ``i`` takes caption ``i mod len(captions)``), so ``n`` only bounds what is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from glide_jax.data import shapes
from glide_jax.data.caption_shards import find_shards, read_shard
from glide_jax.errors import InputError
from glide_jax.regular_files import check_regular_file

SHAPES_PREFIX = "shapes:"
_SHAPES_SETS = {"heldout": (shapes.heldout_prompts, len(shapes.HELDOUT_PAIR_COMBOS) + len(shapes.HELDOUT_COMBOS)),
                "single": (shapes.single_prompts, len(shapes.COLORS) * len(shapes.SHAPES) * len(shapes.SIZES))}


def read_captions(spec: str, n: Optional[int] = None) -> List[str]:
    """At most ``n`` captions (all with None) of ``spec`` (see the module docstring), in their fixed order."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"the number of captions must be a positive integer, got {n!r}")
    spec = str(spec).strip()
    if not spec:
        raise InputError("no caption source given (a .txt or .jsonl file, image-caption shards or shapes:heldout)")
    if spec.startswith(SHAPES_PREFIX):
        captions = _shapes(spec, n)
    elif spec.endswith(".txt"):
        captions = [line.strip() for line in _text(spec).splitlines() if line.strip()][:n]
    elif spec.endswith(".jsonl"):
        captions = _jsonl(spec, n)
    else:
        captions = _shards(spec, n)
    if not captions:
        raise InputError(f"{spec} holds no captions")
    return captions


def _shapes(spec: str, n: Optional[int]) -> List[str]:
    parts = spec[len(SHAPES_PREFIX):].split(":")
    name = parts[0]
    if name not in _SHAPES_SETS or len(parts) > 2:
        raise InputError(f"unknown shapes captions {spec!r}; write shapes:heldout[:N] or shapes:single[:N]")
    make, available = _SHAPES_SETS[name]
    count = available
    if len(parts) == 2:
        try:
            count = int(parts[1])
        except ValueError:
            raise InputError(f"{spec}: {parts[1]!r} is not a number of captions") from None
        if count < 1:
            raise InputError(f"{spec}: the number of captions must be >= 1")
    return make(count if n is None else min(count, n))


def _text(path: str) -> str:
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"caption file {file} does not exist")
    check_regular_file(file, "caption file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _jsonl(path: str, n: Optional[int]) -> List[str]:
    captions: List[str] = []
    for lineno, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
        caption = row if isinstance(row, str) else (row.get("caption", row.get("text"))
                                                    if isinstance(row, dict) else None)
        if not isinstance(caption, str):
            raise InputError(f"{path}:{lineno}: expected a JSON string or an object with a \"caption\" field")
        if caption.strip():
            captions.append(caption.strip())
        if n is not None and len(captions) >= n:
            break
    return captions


def _shards(spec: str, n: Optional[int]) -> List[str]:
    captions: List[str] = []
    for shard in find_shards([spec]):
        for record in read_shard(shard):
            if record.problem is None and record.caption and record.caption.strip():
                captions.append(record.caption.strip())
                if n is not None and len(captions) >= n:
                    return captions
    return captions
