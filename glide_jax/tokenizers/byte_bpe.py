"""Byte-level BPE, the machinery GLIDE's GPT-2 tokenizer and CLIP's tokenizer share.

Both map every byte of the UTF-8 text to one printable character (the same
table, :func:`byte_to_unicode_table`), split the text into pre-tokens with
their own rules, and fuse adjacent symbols by the ranked merge rules of a
``vocab.bpe``-style file (:func:`merge_symbols`). What differs -- the
pre-tokenizer, CLIP's ``</w>`` word ends, the id tables -- stays in
:mod:`glide_jax.tokenizers.glide_bpe` and :mod:`glide_jax.tokenizers.clip_bpe`.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Mapping, Optional, Tuple

Pair = Tuple[str, str]

_NOT_A_MERGE = float("inf")


@functools.lru_cache(maxsize=None)
def byte_to_unicode_table() -> Tuple[Tuple[int, str], ...]:
    """The reversible byte -> character map of byte-level BPE, as ordered (byte, char) pairs.

    Bytes that are visible Latin-1 characters stand for themselves; the remaining 68
    (controls, space, no-break space, soft hyphen) are sent, in increasing byte order, to
    U+0100 and up, so merge files never contain whitespace or control characters. The
    order is part of the format: CLIP numbers its first 256 ids in exactly this order.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    hidden = sorted(set(range(256)) - set(visible))
    return tuple([(b, chr(b)) for b in visible] + [(b, chr(256 + i)) for i, b in enumerate(hidden)])


def byte_chars() -> List[str]:
    """``byte_chars()[b]`` is the character standing for byte ``b``."""
    chars = [""] * 256
    for byte, char in byte_to_unicode_table():
        chars[byte] = char
    return chars


def parse_merges(text: str, limit: Optional[int] = None) -> List[Pair]:
    """Merge rules from a ``vocab.bpe``-style file: a version header, then ``left right`` lines.

    The header line (it contains ``#version``) is skipped, as are blank lines; ``limit``
    keeps only the first rules (CLIP uses a prefix of its file).
    """
    lines = text.split("\n")
    if lines and "#version" in lines[0]:
        lines = lines[1:]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    return merges[:limit] if limit is not None else merges


def merge_symbols(symbols: List[str], ranks: Mapping[Pair, int]) -> List[str]:
    """Run byte-pair merging on one pre-token.

    While some adjacent pair is a known merge, the pair with the lowest rank is fused at
    every non-overlapping occurrence, scanning left to right.
    """
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, _NOT_A_MERGE))
        if best not in ranks:
            break
        symbols = _fuse(symbols, best)
    return symbols


def _fuse(symbols: List[str], pair: Pair) -> List[str]:
    left, right = pair
    fused = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            fused.append(left + right)
            i += 2
        else:
            fused.append(symbols[i])
            i += 1
    return fused


class PieceCache:
    """Memo of pre-token -> ids, emptied when it grows past ``capacity`` (bounded memory
    when tokenizing a whole caption corpus)."""

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._entries: Dict[str, Tuple[int, ...]] = {}

    def get(self, piece: str) -> Optional[Tuple[int, ...]]:
        return self._entries.get(piece)

    def put(self, piece: str, ids: Tuple[int, ...]) -> None:
        if len(self._entries) >= self.capacity:
            self._entries.clear()
        self._entries[piece] = ids
