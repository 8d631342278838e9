"""The reference side of FID: pytorch-fid's ``.npz`` statistics, or statistics of real images, cached.

A reference is either a ``.npz`` of ``mu`` and ``sigma`` (pytorch-fid's format, read by
:func:`glide_jax.evaluation.frechet.load_statistics`) or images: a folder of image files, or
image-caption shards as ``tools.prepare_dataset`` reads them (a folder with ``captions.jsonl``, a
WebDataset ``.tar``, a folder of them, a glob). Images are streamed in batches of one size into
:class:`FeatureStatistics`; never all of them in memory.

Statistics of images are cached in ``<cache>/fid_statistics/<key>.npz`` (the cache folder of
:mod:`glide_jax.cache`), the key digesting the images' bytes in order and the feature extractor's
``describe()`` (network weights and resize mode), so changed images, weights or resize give new
statistics and the same ones are computed once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from glide_jax.cache import default_cache_dir
from glide_jax.data.caption_shards import CAPTIONS_FILE, IMAGE_EXTENSIONS, find_shards, read_shard
from glide_jax.errors import InputError, InputWarning
from glide_jax.evaluation.frechet import FeatureStatistics, load_statistics, save_statistics

CACHE_FOLDER = "fid_statistics"
Statistics = Tuple[np.ndarray, np.ndarray, Dict[str, Any]]  # mu, sigma, what they are


def _is_plain_image_folder(path: Path) -> bool:
    return path.is_dir() and not (path / CAPTIONS_FILE).exists() and not any(path.glob("*.tar"))


def encoded_images(source) -> Iterator[Tuple[str, bytes]]:
    """``(name, encoded bytes)`` of every image of ``source`` (an image folder or shards), in a fixed order."""
    path = Path(str(source)).expanduser()
    if _is_plain_image_folder(path):
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no shards")
        for file in files:
            yield file.name, file.read_bytes()
        return
    for shard in find_shards([str(source)]):
        for record in read_shard(shard):
            if record.image is not None and record.problem is None:
                yield record.key, record.image


def _decode(data: bytes) -> Optional[np.ndarray]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def image_batches(source, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 ``[B, H, W, 3]`` batches of ``source``'s images, each of one size (a batch ends where the size changes)."""
    batch: List[np.ndarray] = []
    bad: List[str] = []
    for name, data in encoded_images(source):
        image = _decode(data)
        if image is None:
            bad.append(name)
            continue
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            yield np.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield np.stack(batch)
    if bad:
        warnings.warn(f"{len(bad)} image(s) of {source} could not be decoded and were left out (first: {bad[0]})",
                      InputWarning, stacklevel=2)


def content_digest(source) -> Tuple[str, int]:
    """(BLAKE2b of the images' bytes in order, number of images) of ``source``."""
    digest, count = hashlib.blake2b(digest_size=16), 0
    for name, data in encoded_images(source):
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
        count += 1
    if not count:
        raise InputError(f"{source} holds no images")
    return digest.hexdigest(), count


def image_statistics(source, features, batch_size: int = 32) -> FeatureStatistics:
    """Streaming feature statistics of ``source``'s images through ``features`` (an extractor)."""
    stats = FeatureStatistics(features.dims)
    for batch in image_batches(source, batch_size):
        stats.add(features(batch))
    return stats


def reference_statistics(reference, features=None, batch_size: int = 32, cache_dir=None) -> Statistics:
    """``(mu, sigma, info)`` of a reference: a ``.npz`` path, or images computed through ``features`` and cached.

    ``info`` says what the reference was (path, kind, and for images their count, digest and whether the
    cache answered). ``cache_dir`` defaults to the package's cache folder.
    """
    path = Path(str(reference)).expanduser()
    if path.suffix == ".npz":
        mu, sigma = load_statistics(path)
        return mu, sigma, {"path": str(reference), "kind": "npz"}
    if not path.exists() and not any(ch in str(reference) for ch in "*?["):
        raise FileNotFoundError(f"FID reference {path} does not exist (a .npz of mu and sigma, an image "
                                "folder or image-caption shards)")
    if features is None:
        raise InputError(f"reference images ({reference}) need a feature extractor (the Inception weights)")
    digest, count = content_digest(reference)
    key = hashlib.blake2b(json.dumps([digest, features.describe()], sort_keys=True).encode(),
                          digest_size=16).hexdigest()
    cached = Path(cache_dir or default_cache_dir()) / CACHE_FOLDER / f"{key}.npz"
    info = {"path": str(reference), "kind": "images", "count": count, "images": digest, "cache": str(cached)}
    if cached.exists():
        mu, sigma = load_statistics(cached)
        return mu, sigma, {**info, "cached": True}
    mu, sigma = image_statistics(reference, features, batch_size).mean_cov()
    write_statistics(cached, mu, sigma)
    return mu, sigma, {**info, "cached": False}


def write_statistics(path, mu, sigma) -> Path:
    """``save_statistics`` through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: FID statistics are written as .npz files")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    save_statistics(partial, mu, sigma)
    os.replace(partial, path)
    return path
