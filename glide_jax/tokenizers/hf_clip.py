"""CLIP's tokenizer read from a Hugging Face checkpoint's own ``vocab.json`` and ``merges.txt``.

The text handling is OpenAI's (that of :class:`~glide_jax.tokenizers.clip_bpe.ClipTokenizer`, as
Hugging Face's Python ``CLIPTokenizer`` does it: ftfy repair, double HTML unescape, whitespace
collapse, lower case); the ids come from the checkpoint's ``vocab.json``, and only the first
``49152 - 256 - 2`` merges of ``merges.txt`` are used, as both OpenAI and Hugging Face do. (Hugging
Face's *fast* tokenizer skips ftfy and the HTML unescape: the two differ only on captions with
broken Unicode or HTML entities.)

Rows are ``[start] + ids + [end]`` padded with the checkpoint's pad token (``<|endoftext|>`` for
OpenAI's checkpoints) to the context (77) or to the longest row, with an attention mask that is 1 on
the framed tokens. A caption with more than ``context - 2`` ids keeps its first ``context - 2`` and
still ends with the end token, which is OpenAI's ``tokenize(truncate=True)`` and Hugging Face's
``truncation=True``; a :class:`~glide_jax.tokenizers.padding.TokenTruncationWarning` says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from glide_jax.errors import InputError
from glide_jax.tokenizers.byte_bpe import parse_merges
from glide_jax.tokenizers.clip_bpe import (CLIP_CONTEXT, CLIP_MERGES, END_TEXT, START_TEXT, WORD_END, ClipTokenizer,
                                           byte_chars_in_table_order)
from glide_jax.tokenizers.padding import check_prompt_list

PathLike = Union[str, os.PathLike]

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
SPECIAL_TOKEN_FILES = ("special_tokens_map.json", "tokenizer_config.json")
MAX_FILE_BYTES = 64 << 20  # OpenAI's vocab.json is about 1 MB and merges.txt 0.5 MB
PADDINGS = ("max_length", "longest")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a Hugging Face CLIP tokenizer needs it")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit for a tokenizer file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None


def read_vocab(path: PathLike) -> Dict[str, int]:
    """A ``vocab.json``: a JSON object of token -> distinct non-negative integer id."""
    path = Path(path)
    try:
        vocab = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(vocab, dict) or not all(type(i) is int and i >= 0 for i in vocab.values()):
        raise InputError(f"{path}: must map every token to a non-negative integer id")
    if len(set(vocab.values())) != len(vocab):
        raise InputError(f"{path}: two tokens share an id")
    return vocab


def _pad_token(directory: Path) -> str:
    """The pad token the checkpoint's tokenizer files name (a string or ``{"content": ...}``)."""
    for name in SPECIAL_TOKEN_FILES:
        path = directory / name
        if path.is_file():
            try:
                pad = json.loads(_read_text(path)).get("pad_token")
            except (json.JSONDecodeError, AttributeError):
                raise InputError(f"{path}: not a JSON object") from None
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str):
                return pad
    return END_TEXT


class HFClipTokenizer:
    """CLIP BPE with a checkpoint's ids; ``encode_batch`` gives Hugging Face's ``input_ids``/``attention_mask``."""

    def __init__(self, vocab: Dict[str, int], merges: Sequence[Tuple[str, str]], pad_token: str = END_TEXT,
                 context: int = CLIP_CONTEXT, source: str = "tokenizer"):
        symbols = byte_chars_in_table_order()
        needed = symbols + [s + WORD_END for s in symbols] + ["".join(m) for m in merges] + [START_TEXT, END_TEXT]
        absent = [t for t in needed if t not in vocab]
        if absent:
            raise InputError(f"{source}: vocab.json lacks {len(absent)} token(s) the merges or CLIP need, "
                             f"e.g. {', '.join(map(repr, absent[:5]))}")
        if pad_token not in vocab:
            raise InputError(f"{source}: the pad token {pad_token!r} is not in vocab.json")
        if type(context) is not int or context < 2:
            raise InputError(f"context must be an integer >= 2 (start and end tokens), got {context!r}")
        self.bpe = ClipTokenizer(merges, encoder=vocab)
        self.pad_token = vocab[pad_token]
        self.context = context

    @classmethod
    def from_directory(cls, directory: PathLike, context: int = CLIP_CONTEXT) -> "HFClipTokenizer":
        """Load ``vocab.json``, ``merges.txt`` and the pad token of a Hugging Face CLIP checkpoint directory."""
        directory = Path(directory)
        vocab = read_vocab(directory / VOCAB_FILE)
        merges = parse_merges(_read_text(directory / MERGES_FILE), limit=CLIP_MERGES)
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise InputError(f"{directory / MERGES_FILE}: {len(bad)} line(s) are not 'left right' pairs, "
                             f"e.g. {' '.join(bad[0])!r}")
        return cls(vocab, merges, _pad_token(directory), context, source=str(directory))

    @property
    def start_token(self) -> int:
        return self.bpe.start_token

    @property
    def end_token(self) -> int:
        return self.bpe.end_token

    def encode(self, text: str) -> List[int]:
        """Ids of the cleaned ``text``, without start and end tokens."""
        return self.bpe.encode(text)

    def frame(self, ids: Sequence[int], prompt: Optional[str] = None) -> List[int]:
        """``[start] + ids[:context - 2] + [end]`` (cutting warns, naming ``prompt`` when given)."""
        row, length = self.bpe.padded_tokens_and_len(list(ids), self.context, prompt=prompt)
        return row[:length]

    def encode_batch(self, captions: Sequence[str], padding: str = "max_length") -> Tuple[np.ndarray, np.ndarray]:
        """int32 ``input_ids`` and ``attention_mask`` ``[B, L]``: ``L`` is the context for ``"max_length"``
        (one shape for every batch), the longest framed caption for ``"longest"`` (Hugging Face's ``padding=True``)."""
        check_prompt_list(captions)
        if padding not in PADDINGS:
            raise InputError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        rows = [self.frame(self.encode(c), prompt=c) for c in captions]
        width = self.context if padding == "max_length" else max((len(r) for r in rows), default=2)
        ids = np.full((len(rows), width), self.pad_token, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask
