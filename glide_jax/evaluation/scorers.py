"""The networks an evaluation scores samples with, split over the local devices: Inception and CLIP.

:class:`InceptionFeatures` gives the pool3 features of uint8 images exactly as
:func:`glide_jax.evaluation.features.inception_features` does (the same preprocessing and network),
with each batch cut over the devices of :mod:`glide_jax.evaluation.devices`. :class:`ClipScoring`
does the same for :class:`glide_jax.evaluation.clip_score.ClipScorer`'s two towers.

Any object with ``dims``, ``describe()`` and ``__call__(images_uint8) -> [N, dims]`` can stand in
for :class:`InceptionFeatures` (the runner only calls those); ``describe()`` is what a resumed
evaluation compares, so it must name the network and digest its weights.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np

from glide_jax.evaluation.clip_inputs import preprocess_images
from glide_jax.evaluation.clip_score import ClipScorer, pair_scores
from glide_jax.evaluation.devices import in_batches, local_mesh, split_jit
from glide_jax.evaluation.features import DEFAULT_BATCH_SIZE
from glide_jax.evaluation.preprocess import DEFAULT_RESIZE, check_images, check_resize_mode, device_stage, host_stage
from glide_jax.hub.convert_inception import load_inception
from glide_jax.models import clip_vit
from glide_jax.models.inception import FEATURES, FIDInceptionV3

_INCEPTION = FIDInceptionV3()


def tree_digest(tree) -> str:
    """A BLAKE2b digest (32 hex digits) of a parameter tree: every leaf's path, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _network_input(resize: str):
    return functools.partial(device_stage, resize=resize)


def _pool3(variables, images):
    return _INCEPTION.apply(variables, images)


class InceptionFeatures:
    """pool3 features (``[N, 2048]`` float32) of uint8 ``[N, H, W, 3]`` images, as pytorch-fid computes them.

    The resize to 299 is compiled per input size and the network once per batch size, so images of
    several sizes share the network's compilation (as in :mod:`glide_jax.evaluation.features`).
    """

    dims = FEATURES

    def __init__(self, variables, resize: str = DEFAULT_RESIZE, batch_size: int = DEFAULT_BATCH_SIZE,
                 devices: Optional[Sequence[Any]] = None, digest: Optional[str] = None):
        self.resize = check_resize_mode(resize)
        self.mesh = local_mesh(devices)
        self.rows = self.mesh.rows(batch_size)
        self.digest = digest or tree_digest(variables)
        self.variables = self.mesh.replicate(variables)
        self._input = split_jit(("fid-input", resize), _network_input(resize), self.mesh, with_params=False)
        self._network = split_jit("fid-pool3", _pool3, self.mesh)

    @classmethod
    def from_file(cls, path, **options) -> "InceptionFeatures":
        """From pytorch-fid's ``.pth`` weights (:func:`glide_jax.hub.convert_inception.load_inception`)."""
        return cls(load_inception(path), **options)

    def describe(self) -> Dict[str, Any]:
        return {"name": "inception-pool3", "dims": self.dims, "resize": self.resize, "weights": self.digest}

    def __call__(self, images) -> np.ndarray:
        images = check_images(images)
        staged = host_stage(images, self.resize)
        return in_batches(lambda batch: self._network(self.variables, self._input(batch)), staged,
                          self.rows).astype(np.float32, copy=False).reshape(len(images), self.dims)


@functools.lru_cache(maxsize=None)
def _towers(config: clip_vit.ClipVitConfig):
    model = clip_vit.ClipVitModel(config)
    return functools.partial(clip_vit.image_features, model), functools.partial(clip_vit.text_features, model)


class ClipScoring:
    """Per-pair CLIP scores (``100 * cos``) of a :class:`ClipScorer`, its towers split over the local devices."""

    def __init__(self, scorer: ClipScorer, batch_size: int = DEFAULT_BATCH_SIZE,
                 devices: Optional[Sequence[Any]] = None):
        if not isinstance(scorer, ClipScorer):
            raise TypeError(f"expected a ClipScorer, got {type(scorer).__name__}")
        self.scorer = scorer
        self.mesh = local_mesh(devices)
        self.rows = self.mesh.rows(batch_size)
        self.digest = tree_digest(scorer.params)
        self.params = self.mesh.replicate(scorer.params)
        image_fn, text_fn = _towers(scorer.config)
        self._image = split_jit(("clip-image", scorer.config), image_fn, self.mesh)
        self._text = split_jit(("clip-text", scorer.config), text_fn, self.mesh)

    def describe(self) -> Dict[str, Any]:
        return {"name": "clip", "weights": self.digest}

    def score_pairs(self, images: Sequence, captions: Sequence[str]) -> np.ndarray:
        """Per-pair scores ``[N]`` of ``images[i]`` (uint8 ``[H, W, 3]``) with ``captions[i]``."""
        scorer = self.scorer
        pixels = preprocess_images(images, scorer.image_config)
        ids, _ = scorer.tokenizer.encode_batch(list(captions), padding="max_length")
        ids = np.asarray(ids, np.int32)
        image_embeds = in_batches(lambda batch: self._image(self.params, batch), pixels, self.rows)
        text_embeds = in_batches(lambda batch: self._text(self.params, batch), ids, self.rows,
                                 filler=np.full(ids.shape[1:], scorer.tokenizer.end_token, np.int32))
        return pair_scores(image_embeds, text_embeds)
