"""SentencePiece tokenizer for GLIDE models whose text encoder is trained from scratch.

A new model does not have to inherit GPT-2's 50257-entry vocabulary: a smaller vocabulary
learned from the training captions shrinks the token embedding and fits the caption domain.
:func:`train_sentencepiece` learns one from a caption file (one caption per line), and
:class:`SentencePieceTokenizer` exposes the same interface as
:class:`glide_jax.tokenizers.glide_bpe.GlideBPETokenizer` (``encode``, ``decode``,
``padded_tokens_and_mask``, ``encode_batch``, ``n_vocab``, ``pad_token``), so data
pipelines and samplers can use either.

Models trained here follow GLIDE's conventions: text is case-folded (GLIDE lower-cases
prompts), no start or end token is added, and id 0 is a dedicated padding id (masked out),
with id 1 for unknown pieces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import sentencepiece

from glide_jax.errors import InputError
from glide_jax.regular_files import is_present, read_regular_bytes
from glide_jax.tokenizers.padding import MaskPaddingMixin

PathLike = Union[str, os.PathLike]

PAD_ID = 0
UNK_ID = 1
_WORD = re.compile(r"[^\W_]+")


class SentencePieceTokenizer(MaskPaddingMixin):
    """A trained SentencePiece model behind the GLIDE tokenizer interface."""

    def __init__(self, model_file: PathLike, pad_token: Optional[int] = None):
        """Load ``model_file``. The padding id is ``pad_token`` if given, else the model's
        pad id, else its end-of-sentence id; a model with neither needs ``pad_token``."""
        path = Path(model_file).expanduser()
        if not is_present(path, "sentencepiece model"):
            raise FileNotFoundError(f"sentencepiece model {path} does not exist")
        self.model_file = path
        self._processor = sentencepiece.SentencePieceProcessor(
            model_proto=read_regular_bytes(path, "sentencepiece model"))
        self._pad = self._choose_pad(pad_token)

    def _choose_pad(self, pad_token: Optional[int]) -> int:
        for candidate in (pad_token, self._processor.pad_id(), self._processor.eos_id()):
            if candidate is not None and candidate >= 0:
                if candidate >= self.n_vocab:
                    raise InputError(f"pad id {candidate} is outside the vocabulary ({self.n_vocab})")
                return int(candidate)
        raise InputError(f"{self.model_file} defines no pad or eos id; pass pad_token explicitly")

    @property
    def n_vocab(self) -> int:
        return self._processor.get_piece_size()

    @property
    def pad_token(self) -> int:
        return self._pad

    def encode(self, text: str) -> List[int]:
        """Ids of ``text`` (normalised as the model was trained, e.g. case-folded)."""
        return list(self._processor.encode(text, out_type=int))

    def decode(self, tokens: Sequence[int]) -> str:
        return self._processor.decode([int(t) for t in tokens])

    def count_unknown(self, text: str) -> Tuple[int, int]:
        """``(known, unknown)``: how many of ``text``'s pieces the vocabulary has, and how many it maps
        to the unknown id (pieces that are only a word boundary count as neither)."""
        unk = self._processor.unk_id()
        known = unknown = 0
        for token in self.encode(text):
            if token == unk:
                unknown += 1
            elif self._processor.id_to_piece(token).strip("\u2581 "):
                known += 1
        return known, unknown


    def unknown_words(self, text: str) -> List[str]:
        """The words of ``text`` (letters and digits, case-folded) that the vocabulary does not hold whole.

        A vocabulary learnt from a small caption language (the embedded models' shapes grammar) holds
        every word of it as one piece; any other word is spelled from short fragments or letters, an
        input the model never saw in training. Larger vocabularies split rare but known words too, so
        for them this lists words the model saw rarely rather than never.
        """
        unknown = []
        for word in dict.fromkeys(_WORD.findall(text.lower())):
            pieces = [t for t in self.encode(word) if self._processor.id_to_piece(t).strip("\u2581 ")]
            if len(pieces) != 1 or pieces[0] == self._processor.unk_id():
                unknown.append(word)
        return unknown


def train_sentencepiece(
    caption_file: PathLike,
    model_prefix: PathLike,
    vocab_size: int,
    *,
    model_type: str = "unigram",
    lowercase: bool = True,
    character_coverage: float = 0.9995,
    max_sentences: int = 5_000_000,
    num_threads: Optional[int] = None,
    **options,
) -> Path:
    """Learn a SentencePiece model from ``caption_file`` (UTF-8, one caption per line).

    Writes ``<model_prefix>.model`` and ``<model_prefix>.vocab`` and returns the ``.model``
    path. ``model_type`` is ``"unigram"`` or ``"bpe"`` (or sentencepiece's ``"char"`` /
    ``"word"``); ``lowercase`` case-folds text on top of NFKC normalisation, like GLIDE's
    lower-casing; at most ``max_sentences`` randomly chosen lines are used. Ids 0 and 1
    are padding and unknown; no start/end ids are reserved. ``options`` go to
    ``sentencepiece.SentencePieceTrainer.train`` unchanged (and override the above).
    """
    caption_path = Path(caption_file).expanduser()
    if not caption_path.is_file():
        raise FileNotFoundError(f"caption file {caption_path} does not exist")
    prefix = Path(model_prefix).expanduser()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(
        input=str(caption_path),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        character_coverage=character_coverage,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        num_threads=num_threads or os.cpu_count() or 1,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
    )
    settings.update(options)
    sentencepiece.SentencePieceTrainer.train(**settings)
    return prefix.with_name(prefix.name + ".model")
