"""Re-ranking samples with the noise-aware CLIP: draw several candidates per prompt, keep the best.

GLIDE's noise-aware CLIP scores an image against a caption at any timestep; at
t = 0 it judges finished samples. ``Pipeline.generate(candidates=N, keep=k)``
samples N base images per prompt, scores each against its own prompt here and
keeps the k highest (best first) before the upsampler runs, so only the kept
ones pay for upsampling.
"""

from __future__ import annotations

import functools
from typing import List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.config import ClipConfig
from glide_jax.errors import InputError
from glide_jax.models.clip import ClipModel, image_embeddings, text_embeddings
from glide_jax.sampling.images import to_model, to_uint8
from glide_jax.sampling.loaded_model import LoadedModel


@functools.lru_cache(maxsize=None)
def _scorer(config: ClipConfig):
    """Jitted ``f(params, x, tokens, lens) -> exp(logit_scale) * cos(image at t=0, text)`` for one config."""
    model = ClipModel(config)

    def score(params, x, tokens, lens):
        t = jnp.zeros((x.shape[0],), jnp.int32)
        image = image_embeddings(model, params, x, t)
        text = text_embeddings(model, params, tokens, lens)
        scale = jnp.exp(params["params"]["logit_scale"] if "params" in params else params["logit_scale"])
        return scale * jnp.sum(image * text, axis=-1)

    return jax.jit(score)


def clip_scores(clip: LoadedModel, samples: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """CLIP's score of each sample (``[B, S, S, 3]`` in [-1, 1]) against its own prompt, at t = 0."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 4 or samples.shape[1:] != (clip.config.image_size, clip.config.image_size, 3):
        raise InputError(f"CLIP scores {clip.config.image_size}px RGB images, got shape {samples.shape}")
    if len(prompts) != samples.shape[0]:
        raise InputError(f"{len(prompts)} prompts for {samples.shape[0]} samples")
    tokens, lens = clip.tokens(list(prompts))
    return np.asarray(_scorer(clip.config)(clip.params, samples, tokens, lens))


def rank_candidates(clip: LoadedModel, samples: np.ndarray, rows: Sequence[str], candidates: int,
                    keep: int) -> List[int]:
    """Row indices of the ``keep`` best-scoring of each prompt's ``candidates`` consecutive rows, best first.

    The samples are scored as the 8-bit images they are returned as, so scoring a returned image
    again gives the score it was ranked by.
    """
    scores = clip_scores(clip, to_model(to_uint8(samples)), rows).reshape(-1, candidates)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    return [int(group * candidates + j) for group, row in enumerate(best) for j in row]
