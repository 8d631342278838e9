"""The training data sources by name: what ``data.source`` may say and how each one is opened.

A source is a random-access reader of ``{"image", "caption"}`` records (what
``input_pipeline.make_iterator`` consumes). Each is registered with an opener,
``opener(data, image_size)`` reading the generic ``DataConfig`` fields (``path``,
``split``, ``seed``) and, if the source has settings of its own, its section of
the config: the ``DataConfig`` field named like the source, of the registered
``config_type`` (``data.shapes`` is a :class:`ShapesDataConfig`). Built in:

* ``shapes``: procedural captioned shapes rendered on demand (``data.shapes``);
* ``tfds``: a prepared dataset version at ``data.path`` (``tools/prepare_dataset.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from glide_jax.data.shapes_source import ShapesDataConfig, open_shapes
from glide_jax.errors import InputError
from glide_jax.named import Registry


@dataclass(frozen=True)
class SourceSpec:
    """One registered source."""

    name: str  # the value of data.source that selects it
    opener: Callable[[Any, int], Any]  # (DataConfig, model image size) -> random-access source
    config_type: Optional[type]  # its settings' dataclass, held in DataConfig.<name>; None: no section


SOURCES: Registry[SourceSpec] = Registry("data source")


def register_source(name: str, opener: Callable[[Any, int], Any], config_type: Optional[type] = None) -> SourceSpec:
    """Make ``data.source=name`` open its data with ``opener``; a name is registered once."""
    return SOURCES.register(name, SourceSpec(name, opener, config_type))


def source_names() -> Tuple[str, ...]:
    return SOURCES.names()


def get_source(name: str) -> SourceSpec:
    """The registered source ``name``, or an ``InputError`` listing the known ones."""
    if name not in SOURCES:
        raise InputError(f"data.source must be one of {', '.join(map(repr, SOURCES.names()))}, got {name!r}")
    return SOURCES.get(name)


def check_sections(data) -> None:
    """Raise if the selected source's section is missing from ``data`` or of another type."""
    spec = get_source(data.source)
    if spec.config_type is not None and not isinstance(getattr(data, spec.name, None), spec.config_type):
        raise InputError(f"data source {spec.name!r} reads its settings from data.{spec.name}, a "
                         f"{spec.config_type.__name__}; {type(data).__name__} has no such field")


def open_source(data, image_size: int):
    """The random-access source ``data`` (a ``DataConfig``) names, for a model of ``image_size`` pixels."""
    return get_source(data.source).opener(data, image_size)


def _open_tfds(data, image_size: int):
    if not data.path:
        raise InputError("data.source='tfds' needs data.path, the folder of a prepared dataset version "
                         "(see tools/prepare_dataset.py), e.g. --set data.path=/data/tfds/my_set/default/1.0.0")
    from glide_jax.data import input_pipeline  # grain and tensorflow_datasets load only when a run reads data

    return input_pipeline.open_source(data.path, data.split)


register_source("shapes", open_shapes, ShapesDataConfig)
register_source("tfds", _open_tfds)
