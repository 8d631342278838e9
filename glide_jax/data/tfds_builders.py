"""TFDS builders that write array_record files readable by grain without TensorFlow.

Why TFDS at all: it gives versioned, self-describing datasets (``features.json``,
split sizes) and a random-access ``as_data_source`` reader, which is what grain
needs for global shuffling, sharding and resumable iteration. TensorFlow is
*not* installed in this project, so the features are chosen to encode in pure
numpy: images are ``tfds.features.Tensor`` uint8 ``[S, S, 3]`` (``Image``
features would need TF to PNG-encode) and captions are ``tfds.features.Text``
(stored as UTF-8, read back as ``bytes``; measured to round-trip without TF).
Always build with ``file_format="array_record"`` (see :func:`prepare`).

Two builders:

* :class:`CaptionedShapes` -- the procedural shapes of :mod:`glide_jax.data.shapes`,
  splits ``train`` and ``heldout``. Example ``i`` of a split is rendered from
  ``np.random.default_rng([seed, split_id, i])``, so a dataset is fully defined
  by its config (size, example counts, seed).
* :class:`ImageCaptionFolder` -- a local collection: one or more folders, each with
  images and a ``captions.jsonl`` of ``{"file": ..., "caption": ...}`` lines.
  Images are decoded with PIL, converted to RGB, centre-cropped to a square and
  resized (Lanczos) to the configured size. Unreadable images are skipped and
  counted; a missing file listed in a ``captions.jsonl`` is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from glide_jax.data import shapes

log = logging.getLogger(__name__)

_SPLIT_IDS = {"train": 0, "heldout": 1}


def _features(size: int) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
        }
    )


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders here: their code path is simply this file.

    TFDS' default ``code_path`` lookup for builders living in a package needs the
    ``importlib_resources`` backport, which is not among our dependencies.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


# ----------------------------------------------------------------------------- shapes


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    size: int = 64
    num_train: int = 20000
    num_heldout: int = 1000
    seed: int = 0


def shapes_config(size: int = 64, num_train: int = 20000, num_heldout: Optional[int] = None, seed: int = 0) -> ShapesConfig:
    """A config whose name encodes its parameters, so different datasets never share a folder."""
    if num_heldout is None:
        num_heldout = max(1, num_train // 20)
    return ShapesConfig(
        name=f"s{size}_n{num_train}_h{num_heldout}_seed{seed}",
        description=f"{size}px captioned shapes, {num_train} train / {num_heldout} heldout, seed {seed}",
        size=size,
        num_train=num_train,
        num_heldout=num_heldout,
        seed=seed,
    )


class CaptionedShapes(_LocalBuilder):
    """One or two flat shapes on grey with an exactly parseable caption."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [shapes_config(32), shapes_config(64), shapes_config(256)]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=_features(self.builder_config.size),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "heldout": self._generate_examples("heldout", cfg.num_heldout)}

    def _generate_examples(self, split: str, num: int):
        cfg = self.builder_config
        for i in range(num):
            rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], i])
            image, caption, _ = shapes.render_example(rng, cfg.size, split)
            yield i, {"image": image, "caption": caption}


# ----------------------------------------------------------------------------- folders


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    sources: Tuple[str, ...] = ()
    size: int = 64


def folder_config(sources: Sequence[str], size: int = 64, name: Optional[str] = None) -> FolderConfig:
    """Config for ``sources`` (folders with ``captions.jsonl``); the default name hashes the
    absolute source paths and the size."""
    srcs = tuple(os.path.abspath(s) for s in sources)
    if not srcs:
        raise ValueError("need at least one source folder")
    if name is None:
        digest = hashlib.sha1("\n".join(srcs).encode()).hexdigest()[:10]
        name = f"s{size}_{digest}"
    return FolderConfig(name=name, description=f"{size}px images from {len(srcs)} folder(s)", sources=srcs, size=size)


def center_crop_resize(img: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: the largest centred square of ``img``, resized with Lanczos."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def read_captions(folder: str) -> Iterable[Tuple[str, str]]:
    """(image path, caption) pairs listed in ``folder/captions.jsonl``."""
    path = os.path.join(folder, "captions.jsonl")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file, caption = row["file"], row["caption"]
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{lineno}: expected {{\"file\": ..., \"caption\": ...}}") from e
            yield os.path.join(folder, file), str(caption)


class ImageCaptionFolder(_LocalBuilder):
    """Local image + caption folders, centre-cropped and resized, as one ``train`` split."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=_features(self.builder_config.size))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config
        skipped = 0
        for shard, folder in enumerate(cfg.sources):
            for path, caption in read_captions(folder):
                if not os.path.exists(path):
                    raise FileNotFoundError(f"{path} is listed in {folder}/captions.jsonl but missing")
                try:
                    with Image.open(path) as img:
                        image = center_crop_resize(img, cfg.size)
                except OSError as e:
                    skipped += 1
                    log.warning("skipping unreadable image %s: %s", path, e)
                    continue
                yield f"{shard}:{os.path.relpath(path, folder)}", {"image": image, "caption": caption}
        if skipped:
            log.warning("skipped %d unreadable images", skipped)


# ----------------------------------------------------------------------------- building


def prepare(builder_cls, config: tfds.core.BuilderConfig, data_dir: str) -> tfds.core.DatasetBuilder:
    """Build (or reuse) the dataset as array_record files under ``data_dir`` and return the builder."""
    builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder


def prepare_shapes(data_dir: str, size: int = 64, num_train: int = 20000, num_heldout: Optional[int] = None,
                   seed: int = 0) -> tfds.core.DatasetBuilder:
    return prepare(CaptionedShapes, shapes_config(size, num_train, num_heldout, seed), data_dir)


def prepare_folders(data_dir: str, sources: Sequence[str], size: int = 64, name: Optional[str] = None) -> tfds.core.DatasetBuilder:
    return prepare(ImageCaptionFolder, folder_config(sources, size, name), data_dir)
