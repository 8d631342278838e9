"""Text tokenizers for GLIDE: the GPT-2 BPE of the released text encoder, CLIP's tokenizer
for CLIP guidance, and SentencePiece for models trained from scratch.

Modules: ``byte_bpe`` (the byte-level BPE both BPE tokenizers share), ``padding``
(truncation warnings, GLIDE's padding mask), ``files`` (finding and reading vocabulary
files), one module per tokenizer, and here the factory :func:`get_tokenizer`.

Importing this package reads no files; vocabularies are loaded when a tokenizer is built
and are downloaded only on request (``glide-jax download tokenizers``).
"""

from __future__ import annotations

import os
from typing import Optional, Union

from glide_jax.errors import InputError
from glide_jax.tokenizers.clip_bpe import ClipTokenizer
from glide_jax.tokenizers.files import find_vocab_file
from glide_jax.tokenizers.glide_bpe import GlideBPETokenizer
from glide_jax.tokenizers.padding import TokenTruncationWarning
from glide_jax.tokenizers.spm import SentencePieceTokenizer, train_sentencepiece

TOKENIZER_KINDS = ("glide-bpe", "clip", "sentencepiece:<model file>")


def get_tokenizer(kind: str, path: Optional[Union[str, os.PathLike]] = None):
    """Build a tokenizer by name.

    * ``"glide-bpe"`` - GLIDE's GPT-2 BPE; ``path`` is a directory holding
      ``encoder.json(.gz)`` and ``vocab.bpe(.gz)`` (default: the cache).
    * ``"clip"`` - CLIP's tokenizer; ``path`` is the vocabulary file or its directory.
    * ``"sentencepiece:<model file>"`` (or ``"sentencepiece"`` with ``path`` = the model
      file) - a model trained with :func:`train_sentencepiece`.
    """
    if kind == "glide-bpe":
        return GlideBPETokenizer.load(path)
    if kind == "clip":
        return ClipTokenizer.load(path)
    if kind == "sentencepiece" or kind.startswith("sentencepiece:"):
        model_file = kind.partition(":")[2] or path
        if not model_file:
            raise InputError("sentencepiece needs a model file: 'sentencepiece:<model file>'")
        return SentencePieceTokenizer(model_file)
    raise InputError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")


__all__ = [
    "ClipTokenizer",
    "GlideBPETokenizer",
    "SentencePieceTokenizer",
    "TOKENIZER_KINDS",
    "TokenTruncationWarning",
    "find_vocab_file",
    "get_tokenizer",
    "train_sentencepiece",
]
