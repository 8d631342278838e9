"""Parity of the CLIP score with torchmetrics' ``CLIPScore`` over a Hugging Face CLIP (``clipscore/``).

The fixture (``clipscore.npz`` + ``clipscore.json``) sits beside the checkpoint it was made with,
``clip_model/`` (a Hugging Face CLIP directory). The check loads that directory as a user would
(:meth:`~glide_jax.evaluation.clip_score.ClipScorer.from_directory`), then compares every stage
on the stored images and captions: the preprocessed pixel values, the token ids and attention mask
(padded to the longest caption, as the fixture's processor call did), both embeddings, the
per-pair scores and the aggregate. The fixture's maker leaves the last pair out of the aggregate
(its caption is meant to be the over-long one), so the aggregate here is over all pairs but the last.

Scores are ``100 * cos``: their errors are compared at :data:`ATOL_FACTORS` times the embedding
tolerance (``1e-3`` for the default ``1e-4``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from glide_jax.evaluation.clip_inputs import preprocess_images
from glide_jax.evaluation.clip_score import ClipScorer, aggregate_clip_score, pair_scores
from glide_jax.parity.fixtures import Errors, compare, compare_exact, nhwc

MODEL_DIR = "clip_model"
PREFIX = "clipscore/"
ATOL_FACTORS = {PREFIX + "scores": 10.0, PREFIX + "clip_score": 10.0}


def is_clip_score_fixture(meta: Mapping) -> bool:
    """A CLIP-score fixture's json lists its captions and the torchmetrics aggregate."""
    return "captions" in meta and "clip_score" in meta


def fixture_images(arrays: Mapping[str, np.ndarray]):
    """The stored images cut back to their true sizes (they are zero-padded to one array)."""
    return [arrays["images"][i, :h, :w] for i, (h, w) in enumerate(arrays["sizes"])]


def check_clip_score(meta: Mapping, arrays: Mapping[str, np.ndarray], path) -> Errors:
    """Errors of pixel values, token ids, embeddings, per-pair scores and the aggregate."""
    directory = Path(path).resolve().parent / MODEL_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"a CLIP-score fixture needs its checkpoint beside it: {directory} is missing")
    captions = list(meta["captions"])
    scorer = ClipScorer.from_directory(directory, batch_size=len(captions))
    pixels = preprocess_images(fixture_images(arrays), scorer.image_config)
    ids, mask = scorer.tokenizer.encode_batch(captions, padding="longest")
    image_embeds = scorer.pixel_embeddings(pixels)
    text_embeds = scorer.text_embeddings(captions)
    scores = pair_scores(image_embeds, text_embeds)
    return {
        PREFIX + "pixel_values": compare(pixels, nhwc(arrays["pixel_values"])),
        PREFIX + "input_ids": compare_exact(ids, arrays["input_ids"]),
        PREFIX + "attention_mask": compare_exact(mask, arrays["attention_mask"]),
        PREFIX + "image_embeds": compare(image_embeds, arrays["image_embeds"]),
        PREFIX + "text_embeds": compare(text_embeds, arrays["text_embeds"]),
        PREFIX + "scores": compare(scores, arrays["scores"]),
        PREFIX + "clip_score": compare(aggregate_clip_score(scores[:-1]), arrays["clip_score"]),
    }
