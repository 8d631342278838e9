"""The Apache Beam form of an image-caption build: the same per-record code, spread over workers.

:func:`examples_transform` is what :class:`glide_jax.data.tfds_builders.ImageCaptionFolder`
returns from ``_generate_examples`` when TFDS is given a Beam runner or Beam options
(``tfds.download.DownloadConfig(beam_runner=..., beam_options=...)``); TFDS then runs it in
its own pipeline and writes the array_record shards with its Beam writer, so the pipeline
runs unchanged on the DirectRunner, Dataflow, Spark or Flink. Its stages:

    input shards -> Reshuffle -> read each shard's raw records -> Reshuffle -> to_example

The first reshuffle spreads the shards over workers, the second spreads one large shard's
records so decoding is not bound to the worker that read the archive. Skips and written
examples increment Beam counters in the namespace :data:`NAMESPACE`, one per name of
:data:`glide_jax.data.image_examples.COUNT_NAMES`; :func:`read_counts` collects them from
the finished pipeline. ``apache_beam`` is imported only when these functions run, so the
package imports without it (it is the optional ``beam`` extra).
"""

from __future__ import annotations

from typing import Dict, Iterator, Sequence, Tuple

from glide_jax.data import caption_shards
from glide_jax.data.image_examples import COUNT_NAMES, WRITTEN, Example, ImageFilter, empty_counts, to_example
from glide_jax.errors import InputError

NAMESPACE = "glide_jax.prepare_dataset"


def _examples_with_counters(record: caption_shards.RawRecord, size: int,
                            image_filter: ImageFilter) -> Iterator[Tuple[str, Example]]:
    from apache_beam.metrics import Metrics  # deferred: apache-beam is the optional [beam] extra

    outcome, example = to_example(record, size, image_filter)
    Metrics.counter(NAMESPACE, outcome).inc()
    if outcome == WRITTEN:
        yield record.key, example


def examples_transform(shards: Sequence[caption_shards.Shard], size: int, image_filter: ImageFilter):
    """A ``beam.PTransform`` from a pipeline to its ``(key, example)`` PCollection."""
    import apache_beam as beam  # deferred: apache-beam is the optional [beam] extra

    return (
        "Shards" >> beam.Create(list(shards))
        | "SpreadShards" >> beam.Reshuffle()
        | "ReadShards" >> beam.FlatMap(caption_shards.read_shard)
        | "SpreadRecords" >> beam.Reshuffle()
        | "ToExamples" >> beam.FlatMap(_examples_with_counters, size=size, image_filter=image_filter)
    )


def read_counts(pipeline_result) -> Dict[str, int]:
    """The counters of a finished pipeline as ``{name: count}`` (every name of ``COUNT_NAMES``)."""
    from apache_beam.metrics.metric import MetricsFilter  # deferred: apache-beam is the optional [beam] extra

    counts = empty_counts()
    for counter in pipeline_result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if name not in COUNT_NAMES:
            raise InputError(f"unexpected counter {name!r} in namespace {NAMESPACE}")
        # Runners that cannot commit metrics report attempted values only.
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[name] += int(value)
    return counts
