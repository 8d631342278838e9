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
* :class:`ImageCaptionFolder` -- an image-caption collection in input shards: folders
  with a ``captions.jsonl`` and WebDataset tar shards (:mod:`glide_jax.data.caption_shards`).
  Each record goes through :func:`glide_jax.data.image_examples.to_example` (the size
  filter, RGB, centre crop, Lanczos resize); defective and filtered records are counted
  and skipped. Built plainly or as an Apache Beam pipeline (:func:`prepare` with a runner).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from glide_jax.data import caption_shards, image_examples, shapes
from glide_jax.errors import InputError

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

    def _log_download_bytes(self) -> None:
        # TFDS' own line, "Downloading and preparing dataset Unknown size (download: Unknown size, ...)",
        # suggests a download; these builders only read local sources (or render shapes).
        print(f"Building dataset {self.name}/{self.builder_config.name} {self.version} in {self.data_dir} "
              "from local sources (nothing is downloaded)...", file=sys.stderr)

    def _log_download_done(self) -> None:
        print(f"Built dataset {self.name}/{self.builder_config.name} {self.version} in {self.data_dir}.",
              file=sys.stderr)


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


# ----------------------------------------------------------------------------- image-caption shards


class EmptyDatasetError(InputError):
    """No record of the sources made it into the dataset."""


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    sources: Tuple[str, ...] = ()  # the --src entries as given (folders, .tar shards, folders of them, globs)
    size: int = 64  # side of the stored square images
    min_side: int = 64  # filter: images whose shorter side is below this are skipped
    max_aspect: float = image_examples.DEFAULT_MAX_ASPECT  # filter: longer / shorter side above this is skipped


def folder_config(sources: Sequence[str], size: int = 64, name: Optional[str] = None, min_side: Optional[int] = None,
                  max_aspect: float = image_examples.DEFAULT_MAX_ASPECT) -> FolderConfig:
    """Config for ``sources`` (see :func:`glide_jax.data.caption_shards.find_shards`).

    ``min_side`` defaults to ``size``: no image is scaled up. The default name hashes the
    absolute source paths, the size and the filter, so different builds never share a folder.
    """
    srcs = tuple(s if "://" in s else os.path.abspath(s) for s in sources)
    if not srcs:
        raise InputError("need at least one source folder or tar shard")
    if size < 1:
        raise InputError(f"size must be positive, got {size}")
    image_filter = image_examples.ImageFilter(size if min_side is None else min_side, max_aspect)  # checks them
    if name is None:
        identity = "\n".join(srcs + (f"min_side={image_filter.min_side}", f"max_aspect={image_filter.max_aspect}"))
        name = f"s{size}_{hashlib.sha1(identity.encode()).hexdigest()[:10]}"
    return FolderConfig(name=name, description=f"{size}px images from {len(srcs)} source(s)", sources=srcs, size=size,
                        min_side=image_filter.min_side, max_aspect=image_filter.max_aspect)


class ImageCaptionFolder(_LocalBuilder):
    """Image-caption shards (folders with ``captions.jsonl``, WebDataset tar shards), centre-cropped
    and resized, as one ``train`` split of ``{"image", "caption", "key"}``.

    ``key`` is ``"<shard index>:<file or sample key>"``, the example's origin. Built plainly or,
    when TFDS is given a Beam runner or options, as a Beam pipeline (:mod:`glide_jax.data.beam_prepare`);
    both run :func:`glide_jax.data.image_examples.to_example` on every record and write equal
    datasets. The counts of written and skipped records (``image_examples.COUNT_NAMES``) are
    kept in ``info.metadata["counts"]`` (the dataset folder's ``metadata.json``).
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "2.0.0": "tar shards, the size filter, the key feature; defective records are counted and skipped",
        "1.0.0": "folders with captions.jsonl",
    }
    BUILDER_CONFIGS = []
    _use_beam = False  # set per build from the download config

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
            "key": tfds.features.Text(),
        })
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features,
                                     metadata=tfds.core.MetadataDict())

    def _generate_splits(self, dl_manager, download_config):
        # TFDS decides Beam or not by what _generate_examples returns; follow the download config.
        self._use_beam = download_config.beam_runner is not None or download_config.beam_options is not None
        split_infos = super()._generate_splits(dl_manager, download_config)
        if not self._use_beam:
            self.info.metadata["counts"] = dict(self._plain_counts)
        return split_infos

    def _process_pipeline_result(self, pipeline_result) -> None:
        from glide_jax.data import beam_prepare  # deferred: it needs the optional [beam] extra

        self.info.metadata["counts"] = beam_prepare.read_counts(pipeline_result)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config
        shards = caption_shards.find_shards(cfg.sources)
        image_filter = image_examples.ImageFilter(cfg.min_side, cfg.max_aspect)
        if self._use_beam:
            from glide_jax.data import beam_prepare  # deferred: it needs the optional [beam] extra

            return beam_prepare.examples_transform(shards, cfg.size, image_filter)
        self._plain_counts = image_examples.empty_counts()
        return self._plain_examples(shards, cfg.size, image_filter)

    def _plain_examples(self, shards, size, image_filter):
        for shard in shards:
            for record in caption_shards.read_shard(shard):
                outcome, example = image_examples.to_example(record, size, image_filter)
                self._plain_counts[outcome] += 1
                if example is not None:
                    yield record.key, example
        if not self._plain_counts[image_examples.WRITTEN]:
            raise EmptyDatasetError(f"every record was skipped: {image_examples.format_counts(self._plain_counts)}")


def build_counts(builder: tfds.core.DatasetBuilder) -> Dict[str, int]:
    """The written / skipped counts recorded when ``builder``'s dataset was built."""
    counts = (builder.info.metadata or {}).get("counts")
    if counts is None:
        raise InputError(f"{builder.data_dir} records no build counts (not an image-caption dataset of version 2+)")
    return {name: int(counts.get(name, 0)) for name in image_examples.COUNT_NAMES}


# ----------------------------------------------------------------------------- building


def prepare(builder_cls, config: tfds.core.BuilderConfig, data_dir: str, beam_runner=None,
            beam_options=None) -> tfds.core.DatasetBuilder:
    """Build (or reuse) the dataset as array_record files under ``data_dir`` and return the builder.

    With ``beam_runner`` (a runner name such as ``"DirectRunner"`` or a runner object) or
    ``beam_options`` (``apache_beam.options.pipeline_options.PipelineOptions``, which may name
    the runner) a builder that supports Beam runs as a Beam pipeline.
    """
    builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
    download_config = tfds.download.DownloadConfig(beam_runner=beam_runner, beam_options=beam_options)
    builder.download_and_prepare(download_config=download_config)
    return builder


def prepare_shapes(data_dir: str, size: int = 64, num_train: int = 20000, num_heldout: Optional[int] = None,
                   seed: int = 0) -> tfds.core.DatasetBuilder:
    return prepare(CaptionedShapes, shapes_config(size, num_train, num_heldout, seed), data_dir)


def prepare_folders(data_dir: str, sources: Sequence[str], size: int = 64, name: Optional[str] = None,
                    min_side: Optional[int] = None, max_aspect: float = image_examples.DEFAULT_MAX_ASPECT,
                    beam_runner=None, beam_options=None) -> tfds.core.DatasetBuilder:
    """Build the image-caption dataset of ``sources`` (folders with ``captions.jsonl`` and tar shards)."""
    config = folder_config(sources, size, name, min_side, max_aspect)
    caption_shards.find_shards(config.sources)  # a bad source fails here, before TFDS starts
    return prepare(ImageCaptionFolder, config, data_dir, beam_runner, beam_options)
