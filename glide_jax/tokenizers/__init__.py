"""Text tokenizers for GLIDE: the GPT-2 BPE of the released text encoder, CLIP's tokenizer
for CLIP guidance, and SentencePiece for models trained from scratch.

Importing this package reads no files; vocabularies are loaded when a tokenizer is built
(see :func:`get_tokenizer`) and are downloaded only on request
(``glide-jax download tokenizers``).
"""

from glide_jax.tokenizers.glide_bpe import GlideBPETokenizer, TokenTruncationWarning
from glide_jax.tokenizers.clip_bpe import ClipTokenizer
from glide_jax.tokenizers.spm import SentencePieceTokenizer, train_sentencepiece
from glide_jax.tokenizers.files import find_vocab_file, get_tokenizer


def clip_lengths(extra):
    """CLIP text lengths from a tokenizer's second output: CLIP's own lengths, or a sentencepiece mask.

    CLIP reads its embedding at ``len - 1``, so an empty caption still counts one position.
    """
    import numpy as np

    extra = np.asarray(extra)
    lens = extra.sum(axis=1) if extra.dtype == bool else extra
    return np.maximum(lens.astype(np.int32), 1)


__all__ = [
    "ClipTokenizer",
    "GlideBPETokenizer",
    "SentencePieceTokenizer",
    "TokenTruncationWarning",
    "clip_lengths",
    "find_vocab_file",
    "get_tokenizer",
    "train_sentencepiece",
]
