"""CLIP score of image-caption pairs, as torchmetrics' ``CLIPScore`` defines it, over a Hugging Face CLIP.

Per pair the score is ``100 * cos(image_embedding, text_embedding)`` (not clamped); the score of a
set of pairs is ``max(mean of the per-pair scores, 0)``, torchmetrics' ``compute()``. The
embeddings are Hugging Face's ``get_image_features`` / ``get_text_features`` of the checkpoint
(``glide_jax.models.clip_vit``), its images preprocessed as ``CLIPImageProcessor`` does
(``glide_jax.evaluation.clip_inputs``) and its captions tokenised with its own files
(``glide_jax.tokenizers.hf_clip``). :class:`ClipScoreAccumulator` keeps a sum and a count, so
scores can be streamed batch by batch and merged across hosts, as torchmetrics' sum-reduced states are.

Where this differs from torchmetrics (1.9, with transformers 4.x):

* captions longer than the context (77 tokens with start and end): torchmetrics tokenises without
  truncation and then cuts the rows at 77, which drops their end token, so the text tower is read
  at the wrong position (the first token, or the largest id). Here such captions keep their first
  75 tokens and still end with the end token (OpenAI's ``tokenize(truncate=True)``), with a warning;
* text is cleaned as OpenAI's and Hugging Face's Python tokenizer do (ftfy, HTML unescape);
  torchmetrics loads the fast tokenizer, which skips both: only broken Unicode or HTML entities differ;
* every caption row is padded to 77 and every batch to ``batch_size`` (one compiled shape; the
  text tower is causal, so padding after the end token changes nothing), where torchmetrics pads to
  the longest caption of each call;
* the running sum is float64 (torchmetrics sums float32).

Images go in as ``[H, W, 3]`` uint8 arrays or PIL images, any size.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.errors import InputError
from glide_jax.evaluation.clip_inputs import ClipImageConfig, preprocess_images
from glide_jax.hub.convert_hf_clip import load_hf_clip
from glide_jax.models import clip_vit
from glide_jax.tokenizers.hf_clip import HFClipTokenizer

DEFAULT_BATCH_SIZE = 32


def pair_scores(image_embeds, text_embeds) -> np.ndarray:
    """``100 * cos`` of each row of ``image_embeds`` with the same row of ``text_embeds``, float32 ``[N]``."""
    image_embeds, text_embeds = np.asarray(image_embeds), np.asarray(text_embeds)
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise InputError(f"embeddings must be two [N, D] arrays of one shape, got {image_embeds.shape} and "
                         f"{text_embeds.shape}")
    return np.asarray(clip_vit.cosine_scores(image_embeds, text_embeds))


def aggregate_clip_score(scores) -> float:
    """torchmetrics' ``CLIPScore.compute()`` of per-pair scores: ``max(mean, 0)``."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if scores.size == 0:
        raise InputError("the CLIP score of no pairs is undefined")
    return max(float(scores.mean()), 0.0)


@dataclasses.dataclass
class ClipScoreAccumulator:
    """Running sum and count of per-pair scores; ``result()`` is the aggregate of all pairs seen.

    Across hosts: sum every host's :meth:`to_array` (e.g. ``process_allgather(...).sum(0)``) and
    read it back with :meth:`from_array`, or :meth:`merge` accumulators directly.
    """

    total: float = 0.0
    count: int = 0

    def update(self, scores) -> "ClipScoreAccumulator":
        scores = np.asarray(scores, np.float64).reshape(-1)
        if not np.all(np.isfinite(scores)):
            raise InputError("CLIP scores must be finite (a zero embedding gives NaN)")
        self.total += float(scores.sum())
        self.count += int(scores.size)
        return self

    def merge(self, other: "ClipScoreAccumulator") -> "ClipScoreAccumulator":
        """A new accumulator holding the pairs of both."""
        return ClipScoreAccumulator(self.total + other.total, self.count + other.count)

    def to_array(self) -> np.ndarray:
        """``[sum, count]`` float64, the state to sum across hosts."""
        return np.array([self.total, self.count], np.float64)

    @classmethod
    def from_array(cls, state) -> "ClipScoreAccumulator":
        total, count = np.asarray(state, np.float64).reshape(2)
        if count < 0 or count != round(count):
            raise InputError(f"an accumulator's count must be a non-negative integer, got {count}")
        return cls(float(total), int(round(count)))

    def mean(self) -> float:
        if self.count == 0:
            raise InputError("the CLIP score of no pairs is undefined")
        return self.total / self.count

    def result(self) -> float:
        """``max(mean, 0)``, torchmetrics' aggregate."""
        return max(self.mean(), 0.0)


def _batched(fn: Callable, rows: np.ndarray, batch_size: int, filler: np.ndarray, width: int) -> np.ndarray:
    """``fn`` over ``rows`` in batches of exactly ``batch_size`` (the last one padded with ``filler``);
    ``[len(rows), width]`` float32."""
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start: start + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, np.broadcast_to(filler, (batch_size - real,) + filler.shape)])
        out.append(np.asarray(fn(chunk))[:real])
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


class ClipScorer:
    """A CLIP checkpoint ready to score pairs: embeddings, per-pair scores and streaming updates.

    Each tower is compiled once for ``[batch_size, ...]``; inputs of any length run in batches of
    that size, the last one padded.
    """

    def __init__(self, config: clip_vit.ClipVitConfig, params, tokenizer: HFClipTokenizer,
                 image_config: ClipImageConfig, batch_size: int = DEFAULT_BATCH_SIZE):
        if type(batch_size) is not int or batch_size <= 0:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        size = config.vision.image_size
        if image_config.output_size != (size, size):
            raise InputError(f"the preprocessor makes {image_config.output_size} images but the model takes "
                             f"{size}x{size}")
        if tokenizer.context > config.text.max_position_embeddings:
            raise InputError(f"the tokenizer's context {tokenizer.context} is longer than the model's "
                             f"{config.text.max_position_embeddings} positions")
        self.config, self.tokenizer, self.image_config, self.batch_size = config, tokenizer, image_config, batch_size
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        model = clip_vit.ClipVitModel(config)
        self._image_fn = jax.jit(functools.partial(clip_vit.image_features, model))
        self._text_fn = jax.jit(functools.partial(clip_vit.text_features, model))

    @classmethod
    def from_directory(cls, directory, batch_size: int = DEFAULT_BATCH_SIZE, dtype: str = "float32") -> "ClipScorer":
        """Load a Hugging Face CLIP checkpoint directory (config, weights, tokenizer and preprocessor files)."""
        directory = Path(directory)
        config, params = load_hf_clip(directory, dtype)
        tokenizer = HFClipTokenizer.from_directory(directory, context=config.text.max_position_embeddings)
        return cls(config, params, tokenizer, ClipImageConfig.from_directory(directory), batch_size)

    def pixel_embeddings(self, pixels) -> np.ndarray:
        """Image features ``[N, projection_dim]`` of preprocessed NHWC pixel values ``[N, S, S, 3]``."""
        pixels = np.asarray(pixels, np.float32)
        filler = np.zeros(pixels.shape[1:], np.float32)
        return _batched(lambda b: self._image_fn(self.params, b), pixels, self.batch_size, filler,
                        self.config.projection_dim)

    def token_embeddings(self, input_ids) -> np.ndarray:
        """Text features ``[N, projection_dim]`` of token rows ``[N, L]`` (each holding its end token)."""
        input_ids = np.asarray(input_ids, np.int32)
        filler = np.full(input_ids.shape[1:], self.tokenizer.end_token, np.int32)
        return _batched(lambda b: self._text_fn(self.params, b), input_ids, self.batch_size, filler,
                        self.config.projection_dim)

    def image_embeddings(self, images: Sequence) -> np.ndarray:
        """Image features of uint8 ``[H, W, 3]`` arrays or PIL images, preprocessed as ``CLIPImageProcessor``."""
        return self.pixel_embeddings(preprocess_images(images, self.image_config))

    def text_embeddings(self, captions: Sequence[str]) -> np.ndarray:
        """Text features of captions (over-long ones keep their end token; see the module docstring)."""
        ids, _ = self.tokenizer.encode_batch(captions, padding="max_length")
        return self.token_embeddings(ids)

    def score_pairs(self, images: Sequence, captions: Sequence[str]) -> np.ndarray:
        """Per-pair ``100 * cos`` scores ``[N]`` (unclamped) of ``images[i]`` with ``captions[i]``."""
        if len(images) != len(captions):
            raise InputError(f"{len(images)} images but {len(captions)} captions: they are scored in pairs")
        return pair_scores(self.image_embeddings(images), self.text_embeddings(captions))

    def update(self, accumulator: ClipScoreAccumulator, images: Sequence, captions: Sequence[str]) -> np.ndarray:
        """Score a batch of pairs into ``accumulator``; returns the batch's per-pair scores."""
        scores = self.score_pairs(images, captions)
        accumulator.update(scores)
        return scores


def clip_score(scorer: ClipScorer, pairs: Iterable, accumulator: Optional[ClipScoreAccumulator] = None) -> float:
    """The CLIP score of ``(images, captions)`` batches streamed through ``scorer`` (``max(mean, 0)``)."""
    accumulator = accumulator if accumulator is not None else ClipScoreAccumulator()
    for images, captions in pairs:
        scorer.update(accumulator, images, captions)
    return accumulator.result()
