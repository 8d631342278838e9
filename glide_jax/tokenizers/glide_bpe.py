"""GLIDE's text tokenizer: GPT-2 byte-level BPE on lower-cased text, with the exact reference ids.

The released GLIDE checkpoints were trained on ids from glide-text2im's copy of the GPT-2
encoder, which lower-cases every prompt first (so capitalised text gets other ids than stock
GPT-2 would give it) and pads with the end token 50256 under a False mask. The checkpoints
are only meaningful with identical ids, so this module reproduces that behaviour exactly
(the tests compare against ids produced by the reference) without torch or the reference
package. One deliberate difference: a prompt longer than the text context is still cut to
its first ``text_ctx`` tokens, but with a :class:`TokenTruncationWarning` instead of silently.

The byte-level machinery (byte -> character table, merge loop, merge-file parsing,
truncation warning) is shared with the CLIP tokenizer in :mod:`glide_jax.tokenizers.clip_bpe`.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import regex

from glide_jax.tokenizers.files import GLIDE_BPE_FILES, find_vocab_file, read_vocab_text

PathLike = Union[str, os.PathLike]
Pair = Tuple[str, str]

# Pre-tokenizer of GPT-2: common English contractions, runs of letters / digits / other
# symbols (each optionally led by one space), and whitespace runs.
_GPT2_PIECES = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


_NOT_A_MERGE = float("inf")


class TokenTruncationWarning(UserWarning):
    """A prompt had more tokens than the text context holds; the tail was dropped."""


def warn_truncated(n_tokens: int, limit: int, prompt: Optional[str] = None) -> None:
    """Warn that ``n_tokens`` tokens were cut to ``limit`` (naming the prompt if known)."""
    if prompt is None:
        subject = "a token sequence"
    else:
        shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
        subject = f"prompt {shown!r}"
    warnings.warn(
        f"{subject} has {n_tokens} tokens but only {limit} fit in the text context; "
        f"keeping the first {limit}",
        TokenTruncationWarning,
        stacklevel=3,
    )


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


def check_prompt_list(prompts: Sequence[str]) -> None:
    """Reject a bare string passed where a list of prompts is expected."""
    if isinstance(prompts, str):
        raise TypeError("encode_batch expects a sequence of prompts, not a single string")


class MaskPaddingMixin:
    """GLIDE's padding convention for a tokenizer with ``encode`` and ``pad_token``:
    fixed-length ids plus a boolean mask that is True on real tokens."""

    def padded_tokens_and_mask(
        self, tokens: Sequence[int], text_ctx: int, *, prompt: Optional[str] = None
    ) -> Tuple[List[int], List[bool]]:
        """``tokens`` cut or padded (with :attr:`pad_token`) to ``text_ctx``, and the mask
        that is True on real tokens. Cutting warns, naming ``prompt`` when given."""
        if len(tokens) > text_ctx:
            warn_truncated(len(tokens), text_ctx, prompt)
        kept = list(tokens[:text_ctx])
        padding = text_ctx - len(kept)
        return kept + [self.pad_token] * padding, [True] * len(kept) + [False] * padding

    def encode_batch(self, prompts: Sequence[str], text_ctx: int) -> Tuple[np.ndarray, np.ndarray]:
        """Encode and pad every prompt: int32 tokens ``[B, text_ctx]`` and bool mask ``[B, text_ctx]``."""
        check_prompt_list(prompts)
        tokens = np.empty((len(prompts), text_ctx), np.int32)
        mask = np.empty((len(prompts), text_ctx), bool)
        for row, prompt in enumerate(prompts):
            tokens[row], mask[row] = self.padded_tokens_and_mask(
                self.encode(prompt), text_ctx, prompt=prompt
            )
        return tokens, mask


class GlideBPETokenizer(MaskPaddingMixin):
    """GPT-2 byte-level BPE as used by GLIDE's text transformer (50257 ids, end token 50256)."""

    def __init__(self, encoder: Mapping[str, int], merges: Sequence[Pair]):
        self._encoder = dict(encoder)
        self._decoder = {index: token for token, index in self._encoder.items()}
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._byte_chars = byte_chars()
        self._char_bytes = {char: byte for byte, char in byte_to_unicode_table()}
        self._cache = PieceCache()

    @classmethod
    def from_files(cls, encoder_path: PathLike, merges_path: PathLike) -> "GlideBPETokenizer":
        """Load from ``encoder.json`` and ``vocab.bpe`` (each plain or gzip-compressed)."""
        encoder = json.loads(read_vocab_text(encoder_path))
        merges = parse_merges(read_vocab_text(merges_path))
        return cls(encoder, merges)

    @classmethod
    def load(cls, directory: Optional[PathLike] = None) -> "GlideBPETokenizer":
        """Load from ``directory``, or from the download cache when it is None."""
        encoder_name, merges_name = GLIDE_BPE_FILES
        return cls.from_files(
            find_vocab_file(encoder_name, directory), find_vocab_file(merges_name, directory)
        )

    @property
    def n_vocab(self) -> int:
        return len(self._encoder)

    @property
    def end_token(self) -> int:
        """The last id (50256, ``<|endoftext|>``); GLIDE also pads with it."""
        return self.n_vocab - 1

    @property
    def pad_token(self) -> int:
        return self.end_token

    def encode(self, text: str) -> List[int]:
        """Ids of ``text`` after lower-casing; no start or end token is added, and
        ``<|endoftext|>`` written in the text is tokenized as ordinary characters."""
        ids: List[int] = []
        for piece in _GPT2_PIECES.findall(text.lower()):
            ids.extend(self._piece_ids(piece))
        return ids

    def _piece_ids(self, piece: str) -> Tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is None:
            symbols = [self._byte_chars[b] for b in piece.encode("utf-8")]
            ids = tuple(self._encoder[s] for s in merge_symbols(symbols, self._ranks))
            self._cache.put(piece, ids)
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``; byte sequences that are not valid UTF-8 become U+FFFD."""
        chars = "".join(self._decoder[int(t)] for t in tokens)
        return bytes(self._char_bytes[c] for c in chars).decode("utf-8", errors="replace")
