"""The training input pipeline: a TFDS array_record split read by grain, as model-ready batches.

Why grain's ``DataLoader``: it gives a global shuffle over a random-access
source, per-host sharding, optional worker processes, and an iterator whose
state (a small JSON blob) can be checkpointed with the model and restored to
resume at exactly the same next batch.

The global stream is the one a single process without workers reads: grain's
shuffled ``IndexSampler`` over the whole source, global batch ``s`` being
stream positions ``s * B .. s * B + B - 1``. A host reads only the rows of each
global batch that its devices hold (:func:`host_rows` of the batch sharding;
by default the ``shard_index``-th of ``shard_count`` equal blocks), through
:class:`GlobalBatchRows`, which also undoes the interleaving of grain's
worker processes. So the examples of a global batch, their order and every
random choice made for them are the same for any number of hosts and of
workers (resume a saved iterator state with the host rows and the
``worker_count`` that saved it).

Per example (a ``RandomMap``; its generator is grain's ``Philox(seed + i)`` for
the global stream position ``i``, so every random choice is a pure function of
the seed and the position, reproducible on resume):

* the uint8 image is centre-cropped to a square and resized to ``image_size``
  (exact area averaging for integer down-scaling, Lanczos otherwise) and scaled
  to float32 in [-1, 1]. No random flips: they would falsify "left of" captions;
* for the upsampler (``low_res_size`` set) ``low_res`` is the area (box) average
  of that high-res image, as the super-resolution model sees at training time;
* caption dropout: with probability ``caption_dropout`` the caption becomes ""
  (the unconditional branch of classifier-free guidance), *before* tokenizing;
* for the inpainting fine-tune, ``inpaint_mask`` from :mod:`glide_jax.data.masks`.

Per host batch (its rows of the global batch), captions go
through the ``tokenize(list[str]) -> dict[str, np.ndarray]`` callable passed in;
its arrays are merged into the batch. Batches are dicts of numpy arrays::

    image         float32 [B, S, S, 3] in [-1, 1]
    low_res       float32 [B, s, s, 3] in [-1, 1]   (upsampler only)
    inpaint_mask  float32 [B, S, S, 1], 1 = keep    (inpainting only)
    caption       str     [B]   after dropout (for logging; not sent to devices)
    example_id    int32   [B]   record index in the split
    ...           whatever ``tokenize`` returns, e.g. tokens int32 [B, ctx], mask bool [B, ctx]

With ``worker_count > 0`` the ``tokenize`` callable must be picklable.
:func:`global_batch` turns the per-host batches into global ``jax.Array``\\ s.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags as absl_flags
from PIL import Image

from glide_jax.data.masks import MAX_ERASE, MIN_ERASE, random_inpaint_mask
from glide_jax.errors import InputError

Tokenizer = Callable[[List[str]], Dict[str, np.ndarray]]
_OWN_KEYS = ("image", "low_res", "inpaint_mask", "caption", "example_id")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    image_size: int = 64  # model input size (for the upsampler: the high-res size)
    low_res_size: Optional[int] = None  # upsampler: also emit "low_res" at this size
    global_batch_size: int = 32  # summed over hosts
    seed: int = 0  # shuffle order and every per-example random choice
    shuffle: bool = True
    num_epochs: Optional[int] = None  # None: repeat forever
    caption_dropout: float = 0.2
    inpaint: bool = False  # emit "inpaint_mask"
    mask_min_erase: float = MIN_ERASE
    mask_max_erase: float = MAX_ERASE
    drop_remainder: bool = True
    worker_count: int = 0  # grain worker processes (0: in the calling process)
    worker_buffer_size: int = 1

    def __post_init__(self):
        if self.low_res_size is not None and self.image_size % self.low_res_size:
            raise InputError(f"low_res_size {self.low_res_size} must divide image_size {self.image_size}")
        if not 0 <= self.caption_dropout <= 1:
            raise InputError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if not 0 <= self.seed < 2**31:
            raise InputError("seed must be a non-negative 31-bit integer (grain's limit)")


# ----------------------------------------------------------------------------- sources and sharding


def open_source(dataset: Any, split: str = "train"):
    """Random-access source of a prepared split; ``dataset`` is a TFDS builder or the
    folder of a prepared dataset version (``.../name/config/1.0.0``)."""
    if isinstance(dataset, (str, bytes)) or hasattr(dataset, "__fspath__"):
        dataset = tfds.builder_from_directory(str(dataset))
    return dataset.as_data_source(split)


class KeyedSource:
    """Wraps a source so each record also carries its index (``example_id``)."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, key: int) -> Dict[str, Any]:
        record = dict(self._source[key])
        record["example_id"] = np.int32(key)
        return record

    def __repr__(self) -> str:  # grain validates restored states against this
        inner = self._source
        if isinstance(inner, (list, tuple, np.ndarray)):  # in-memory: describe, never print the data
            return f"KeyedSource({type(inner).__name__}[{len(inner)}])"
        return f"KeyedSource({inner!r})"


def shard_options(shard_index: Optional[int] = None, shard_count: Optional[int] = None) -> grain.sharding.ShardOptions:
    """This host's shard: ``jax.process_index()`` of ``jax.process_count()`` unless given."""
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise InputError(f"shard_index {index} out of range for shard_count {count}")
    # drop_remainder: every host sees the same number of records, so no host runs out first.
    return grain.sharding.ShardOptions(shard_index=index, shard_count=count, drop_remainder=True)


def even_rows(global_batch_size: int, shard_index: int, shard_count: int) -> List[int]:
    """The ``shard_index``-th of ``shard_count`` equal blocks of rows of a global batch."""
    per_host = host_batch_size(global_batch_size, shard_count)
    return list(range(shard_index * per_host, (shard_index + 1) * per_host))


def host_rows(sharding: jax.sharding.Sharding, global_batch_size: int) -> List[int]:
    """Rows of a ``[global_batch_size, ...]`` batch that this process's devices hold under ``sharding``,
    ascending: the rows this host must read, in the order ``global_batch`` places its local batch."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        rows.update(range(*index[0].indices(global_batch_size)))
    return sorted(rows)


class GlobalBatchRows:
    """A grain sampler giving one host its rows of every global batch of an ``IndexSampler``'s stream.

    Host batch ``j`` holds positions ``j * B + rows[i]`` of the global stream
    (``B`` the global batch size), each with the record key and ``Philox(seed +
    position)`` generator the single-process stream gives that position. With
    ``worker_count`` grain workers, worker ``w`` reads this sampler's indices
    ``w, w + W, ...`` and its batches are emitted in turn; the index arithmetic
    below sends worker ``w``'s ``n``-th batch to host batch ``n * W + w``, so the
    host batches come out in order whatever the number of workers.
    """

    def __init__(self, stream: grain.samplers.IndexSampler, global_batch_size: int, rows: Sequence[int],
                 worker_count: int = 0, num_records: Optional[int] = None):
        self.stream, self.global_batch_size = stream, int(global_batch_size)
        self.rows = [int(r) for r in rows]
        self.workers = max(int(worker_count), 1)
        if not self.rows or sorted(set(self.rows)) != self.rows or not 0 <= self.rows[0] <= self.rows[-1] < global_batch_size:
            raise InputError(f"host rows must be distinct, ascending and within the global batch of "
                             f"{global_batch_size}, got {self.rows}")
        self._length = None
        if num_records is not None:  # finite stream: only whole global batches, whole rounds of the workers
            global_batches = num_records // self.global_batch_size
            self._length = global_batches // self.workers * self.workers * len(self.rows)

    def position(self, index: int) -> int:
        """The global stream position of this sampler's ``index``."""
        per_host = len(self.rows)
        worker, in_worker = index % self.workers, index // self.workers
        batch = (in_worker // per_host) * self.workers + worker
        return batch * self.global_batch_size + self.rows[in_worker % per_host]

    def __len__(self) -> int:
        return sys.maxsize if self._length is None else self._length

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if index < 0 or index >= len(self):
            raise IndexError(f"host stream index {index} out of range [0, {len(self)})")
        position = self.position(index)
        record = self.stream[position]
        return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)

    def __repr__(self) -> str:  # grain validates restored states against this
        return (f"GlobalBatchRows({self.stream!r}, global_batch_size={self.global_batch_size}, "
                f"rows={_spans(self.rows)}, workers={self.workers})")


def _spans(rows: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2,5"``: host rows, short enough for a saved iterator state."""
    spans = []
    start = prev = rows[0]
    for row in list(rows[1:]) + [None]:
        if row is None or row != prev + 1:
            spans.append(f"{start}-{prev}" if prev > start else str(start))
            start = row
        prev = row
    return ",".join(spans)


# ----------------------------------------------------------------------------- per-example work


def area_downsample(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over ``k x k`` blocks of a [H, W, C] array whose side is ``k * size``."""
    h, w, c = x.shape
    if h != w or h % size:
        raise InputError(f"cannot area-downsample {x.shape} to {size}")
    k = h // size
    return x.reshape(size, k, size, k, c).mean(axis=(1, 3), dtype=np.float32)


def to_model_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [size, size, 3] in [-1, 1] (centre crop, then resize)."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top : top + s, left : left + s, :3]
    if s == size:
        x = image.astype(np.float32)
    elif s > size and s % size == 0:
        x = area_downsample(image.astype(np.float32), size)
    else:
        x = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS), np.float32)
    return x / 127.5 - 1.0


class Preprocess(grain.transforms.RandomMap):
    """Image resizing, low-res pair, caption dropout and inpaint mask for one record."""

    def __init__(self, config: PipelineConfig):
        self.config = config

    def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        cfg = self.config
        # Independent sub-streams: switching the mask on or off leaves dropout unchanged.
        drop_rng, mask_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
        caption = element["caption"]
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8")
        if drop_rng.random() < cfg.caption_dropout:
            caption = ""
        image = to_model_image(element["image"], cfg.image_size)
        out = {"image": image, "caption": caption, "example_id": np.int32(element.get("example_id", -1))}
        if cfg.low_res_size is not None:
            out["low_res"] = area_downsample(image, cfg.low_res_size)
        if cfg.inpaint:
            out["inpaint_mask"] = random_inpaint_mask(mask_rng, cfg.image_size, cfg.mask_min_erase, cfg.mask_max_erase)
        return out


class Collate:
    """Stacks examples and tokenizes their captions (a grain ``batch_fn``)."""

    def __init__(self, tokenize: Optional[Tokenizer]):
        self.tokenize = tokenize

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
        captions = [e["caption"] for e in examples]
        batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "caption"}
        batch["caption"] = np.array(captions, dtype=np.str_)
        if self.tokenize is not None:
            tokens = self.tokenize(captions)
            for k, v in tokens.items():
                if k in _OWN_KEYS:
                    raise InputError(f"tokenizer output key {k!r} clashes with the pipeline's own keys")
                v = np.asarray(v)
                if v.shape[:1] != (len(captions),):
                    raise InputError(f"tokenizer output {k!r} has shape {v.shape}, expected leading {len(captions)}")
                batch[k] = v
        return batch


# ----------------------------------------------------------------------------- loader


def host_batch_size(global_batch_size: int, shard_count: int) -> int:
    if global_batch_size % shard_count:
        raise InputError(f"global batch {global_batch_size} is not divisible by {shard_count} hosts")
    return global_batch_size // shard_count


def make_loader(
    source,
    config: PipelineConfig,
    tokenize: Optional[Tokenizer] = None,
    *,
    shard_index: Optional[int] = None,
    shard_count: Optional[int] = None,
    rows: Optional[Sequence[int]] = None,
) -> grain.DataLoader:
    """A grain DataLoader over ``source`` (see :func:`open_source`) for this host.

    ``rows``: the rows of each global batch this host reads (:func:`host_rows` of
    the batch sharding); by default the ``shard_index``-th of ``shard_count``
    equal blocks (this process's of all processes)."""
    shards = shard_options(shard_index, shard_count)
    if rows is None:
        rows = even_rows(config.global_batch_size, shards.shard_index, shards.shard_count)
    rows = [int(r) for r in rows]
    if config.worker_count > 0 and not absl_flags.FLAGS.is_parsed():
        # grain 0.2.18 reads an absl flag when starting workers and fails in scripts that
        # never parsed flags (google/grain#1355); the defaults are what we want.
        absl_flags.FLAGS.mark_as_parsed()
    keyed = KeyedSource(source)
    # The global stream: what one process without workers reads (ShardOptions(0, 1) keeps its repr,
    # which saved iterator states name, the same as a single process has always used).
    sampler = grain.samplers.IndexSampler(
        num_records=len(keyed),
        shard_options=grain.sharding.ShardOptions(shard_index=0, shard_count=1, drop_remainder=True),
        shuffle=config.shuffle,
        num_epochs=config.num_epochs,
        seed=config.seed,
    )
    if rows != list(range(config.global_batch_size)) or config.worker_count > 0:
        finite = None if config.num_epochs is None else len(sampler)
        sampler = GlobalBatchRows(sampler, config.global_batch_size, rows, config.worker_count, finite)
    ops = [
        Preprocess(config),
        grain.transforms.Batch(batch_size=len(rows), drop_remainder=config.drop_remainder, batch_fn=Collate(tokenize)),
    ]
    return grain.DataLoader(
        data_source=keyed,
        sampler=sampler,
        operations=ops,
        worker_count=config.worker_count,
        worker_buffer_size=config.worker_buffer_size,
        shard_options=grain.sharding.NoSharding(),
    )


def make_iterator(source, config: PipelineConfig, tokenize: Optional[Tokenizer] = None, *, state: Optional[bytes] = None,
                  shard_index: Optional[int] = None, shard_count: Optional[int] = None,
                  rows: Optional[Sequence[int]] = None) -> grain.DataLoaderIterator:
    """An iterator of host batches; ``state`` (from ``iterator.get_state()``) resumes it exactly."""
    it = iter(make_loader(source, config, tokenize, shard_index=shard_index, shard_count=shard_count, rows=rows))
    if state is not None:
        it.set_state(state)
    return it


# ----------------------------------------------------------------------------- to devices


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding,
                 global_batch_size: Optional[int] = None) -> Dict[str, jax.Array]:
    """Assemble global arrays from every host's batch (numeric entries only; strings stay on the host).

    ``sharding`` places the batch dimension on the devices; a training run passes
    ``glide_jax.train.sharding.batch_sharding(mesh)``, the layout its jitted step expects,
    and reads each host's rows with :func:`host_rows` of it. ``global_batch_size``
    (needed when hosts hold overlapping rows, e.g. a tensor axis across hosts) defaults
    to the local size times the number of processes.
    """
    out = {}
    for k, v in local_batch.items():
        v = np.asarray(v)
        if v.dtype.kind in "USO":
            continue
        shape = None if global_batch_size is None else (int(global_batch_size),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return out
