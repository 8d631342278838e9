"""GLIDE's text tokenizer: GPT-2 byte-level BPE on lower-cased text, with the exact reference ids.

The released GLIDE checkpoints were trained on ids from glide-text2im's copy of the GPT-2
encoder, which lower-cases every prompt first (so capitalised text gets other ids than stock
GPT-2 would give it) and pads with the end token 50256 under a False mask. The checkpoints
are only meaningful with identical ids, so this module reproduces that behaviour exactly
(the tests compare against ids produced by the reference) without torch or the reference
package. One deliberate difference: a prompt longer than the text context is still cut to
its first ``text_ctx`` tokens, but with a :class:`TokenTruncationWarning` instead of silently.

The byte-level machinery (byte -> character table, merge loop, merge-file parsing) is
:mod:`glide_jax.tokenizers.byte_bpe`, shared with the CLIP tokenizer; the padding
convention is :mod:`glide_jax.tokenizers.padding`.
"""

from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import regex

from glide_jax.tokenizers.byte_bpe import (Pair, PieceCache, byte_chars, byte_to_unicode_table, merge_symbols,
                                          parse_merges)
from glide_jax.tokenizers.files import GLIDE_BPE_FILES, find_vocab_file, read_vocab_text
from glide_jax.tokenizers.padding import MaskPaddingMixin

PathLike = Union[str, os.PathLike]

# Pre-tokenizer of GPT-2: common English contractions, runs of letters / digits / other
# symbols (each optionally led by one space), and whitespace runs.
_GPT2_PIECES = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


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
