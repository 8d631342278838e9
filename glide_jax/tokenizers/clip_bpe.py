"""CLIP's tokenizer (``SimpleTokenizer``), reproducing the ids GLIDE's noise-aware CLIP expects.

GLIDE's CLIP guidance encodes prompts with the original CLIP byte-level BPE
(``bpe_simple_vocab_16e6.txt``, 49408 ids), whose text handling differs from GPT-2's:
the text is repaired with ``ftfy.fix_text``, HTML-unescaped twice, whitespace-collapsed
and lower-cased; words end in ``</w>`` symbols; digits are split one by one; and
``<|startoftext|>`` / ``<|endoftext|>`` written in the text become the special ids. The
padded form is ``[start] + ids + [end]`` followed by zeros, and the length counts both
special tokens, which is where the CLIP text encoder reads its output. A prompt too long
for the context keeps its first ``ctx - 2`` ids, as in the reference, but with a warning.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import ftfy
import numpy as np
import regex

from glide_jax.tokenizers.byte_bpe import (Pair, PieceCache, byte_chars, byte_to_unicode_table, merge_symbols,
                                          parse_merges)
from glide_jax.tokenizers.files import CLIP_BPE_FILE, find_vocab_file, read_vocab_text
from glide_jax.tokenizers.padding import check_prompt_list, warn_truncated

PathLike = Union[str, os.PathLike]

START_TEXT = "<|startoftext|>"
END_TEXT = "<|endoftext|>"
CLIP_CONTEXT = 77
# CLIP uses only the first 49152 - 256 - 2 merges of its file: 256 byte symbols,
# 256 word-final byte symbols, the merges and 2 special tokens make 49408 ids.
CLIP_MERGES = 49152 - 256 - 2
WORD_END = "</w>"

# Pre-tokenizer: special tokens, contractions, letter runs, single digits, symbol runs.
_CLIP_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """CLIP's normalisation: ftfy repair, double HTML unescape, whitespace collapse, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipTokenizer:
    """CLIP's byte-level BPE with ``</w>`` word ends (start 49406, end 49407, pad 0).

    The ids follow from the merges (bytes, word-final bytes, merge results, the two special
    tokens, in that order), unless ``encoder`` gives the token -> id table explicitly, as a
    Hugging Face ``vocab.json`` does (see :mod:`glide_jax.tokenizers.hf_clip`).
    """

    def __init__(self, merges: Sequence[Pair], encoder: Optional[Mapping[str, int]] = None):
        if encoder is None:
            symbols = byte_chars_in_table_order()
            vocab = symbols + [s + WORD_END for s in symbols]
            vocab += ["".join(pair) for pair in merges]
            vocab += [START_TEXT, END_TEXT]
            encoder = {token: index for index, token in enumerate(vocab)}
        self._encoder: Dict[str, int] = dict(encoder)
        self._decoder = {index: token for token, index in self._encoder.items()}
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._specials = {START_TEXT: self._encoder[START_TEXT], END_TEXT: self._encoder[END_TEXT]}
        self._byte_chars = byte_chars()
        self._char_bytes = {char: byte for byte, char in byte_to_unicode_table()}
        self._cache = PieceCache()

    @classmethod
    def from_file(cls, bpe_path: PathLike) -> "ClipTokenizer":
        """Load ``bpe_simple_vocab_16e6.txt`` (plain or gzip-compressed)."""
        return cls(parse_merges(read_vocab_text(bpe_path), limit=CLIP_MERGES))

    @classmethod
    def load(cls, path: Optional[PathLike] = None) -> "ClipTokenizer":
        """Load from the vocabulary file ``path``, a directory holding it, or the cache."""
        if path is not None and Path(path).expanduser().is_file():
            return cls.from_file(Path(path).expanduser())
        return cls.from_file(find_vocab_file(CLIP_BPE_FILE, path))

    @property
    def n_vocab(self) -> int:
        return len(self._encoder)

    @property
    def start_token(self) -> int:
        return self._specials[START_TEXT]

    @property
    def end_token(self) -> int:
        return self._specials[END_TEXT]

    @property
    def pad_token(self) -> int:
        return 0

    def encode(self, text: str) -> List[int]:
        """Ids of the cleaned ``text``, without the start/end tokens that padding adds."""
        ids: List[int] = []
        for piece in _CLIP_PIECES.findall(clean_text(text)):
            ids.extend(self._piece_ids(piece))
        return ids

    def _piece_ids(self, piece: str) -> Tuple[int, ...]:
        if piece in self._specials:
            return (self._specials[piece],)
        ids = self._cache.get(piece)
        if ids is None:
            symbols = [self._byte_chars[b] for b in piece.encode("utf-8")]
            symbols[-1] += WORD_END
            ids = tuple(self._encoder[s] for s in merge_symbols(symbols, self._ranks))
            self._cache.put(piece, ids)
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``; each word end becomes a space (so words come back separated)."""
        chars = "".join(self._decoder[int(t)] for t in tokens)
        text = bytes(self._char_bytes[c] for c in chars).decode("utf-8", errors="replace")
        return text.replace(WORD_END, " ")

    def padded_tokens_and_len(
        self, tokens: Sequence[int], text_ctx: int = CLIP_CONTEXT, *, prompt: Optional[str] = None
    ) -> Tuple[List[int], int]:
        """``[start] + tokens[:text_ctx - 2] + [end]`` padded with zeros, and its unpadded
        length (both special tokens included). Cutting warns, naming ``prompt`` when given."""
        room = text_ctx - 2
        if len(tokens) > room:
            warn_truncated(len(tokens), room, prompt)
        framed = [self.start_token, *tokens[:room], self.end_token]
        return framed + [self.pad_token] * (text_ctx - len(framed)), len(framed)

    def encode_batch(
        self, prompts: Sequence[str], ctx: int = CLIP_CONTEXT
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Encode and frame every prompt: int32 tokens ``[B, ctx]`` and int32 lengths ``[B]``."""
        check_prompt_list(prompts)
        tokens = np.empty((len(prompts), ctx), np.int32)
        lens = np.empty((len(prompts),), np.int32)
        for row, prompt in enumerate(prompts):
            tokens[row], lens[row] = self.padded_tokens_and_len(self.encode(prompt), ctx, prompt=prompt)
        return tokens, lens


def byte_chars_in_table_order() -> List[str]:
    """The 256 byte symbols in the order CLIP numbers them (ids 0..255)."""
    return [char for _, char in byte_to_unicode_table()]
