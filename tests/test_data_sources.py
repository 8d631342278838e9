"""The data-source registry: ``data.source`` names a registered opener, each source's settings sit in its section."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from glide_jax.data import sources
from glide_jax.data.shapes_source import ShapesDataConfig, ShapesSource
from glide_jax.train import inputs
from glide_jax.train.experiment import DataConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    """Register sources for one test and remove them afterwards."""
    names = []

    def register(name, opener, config_type=None):
        names.append(name)
        return sources.register_source(name, opener, config_type)

    yield register
    for name in names:
        sources.SOURCES.remove(name)


def test_the_built_in_sources_and_their_sections():
    assert sources.source_names()[:2] == ("shapes", "tfds")
    assert sources.get_source("shapes").config_type is ShapesDataConfig
    assert sources.get_source("tfds").config_type is None  # reads the generic data.path and data.split
    with pytest.raises(ValueError, match=r"data.source must be one of 'shapes', 'tfds'.*got 'folders'"):
        DataConfig(source="folders")


def test_open_source_asks_the_registry_with_the_models_image_size():
    cfg = load_config_file(f"{REPO}/experiments/configs/base.py:micro")
    source = inputs.open_source(cfg)
    assert isinstance(source, ShapesSource) and len(source) == 256 and source.size == 16
    assert source[3]["image"].shape == (16, 16, 3)
    # the same example as the source built by hand from the section's fields
    by_hand = ShapesSource(256, 16, cfg.data.seed, "train", 0.5, "free")
    np.testing.assert_array_equal(source[3]["image"], by_hand[3]["image"])
    tfds = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="tfds"))
    with pytest.raises(ValueError, match="data.source='tfds' needs data.path"):
        inputs.open_source(tfds)


def test_a_registered_source_is_opened_by_name(registered):
    records = [{"image": np.zeros((8, 8, 3), np.uint8), "caption": b"a red circle"}] * 5
    seen = []

    def opener(data, image_size):
        seen.append((data.split, image_size))
        return records

    registered("in_memory", opener)
    cfg = load_config_file(f"{REPO}/experiments/configs/base.py:micro")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="in_memory", split="heldout"))
    assert inputs.open_source(cfg) is records and seen == [("heldout", 16)]
    with pytest.raises(ValueError, match="registered already"):
        sources.register_source("in_memory", opener)


def test_a_source_whose_section_dataconfig_lacks_is_refused_by_name(registered):
    @dataclasses.dataclass(frozen=True)
    class ShardsConfig:
        pattern: str = ""

    registered("shards", lambda data, size: [], ShardsConfig)
    with pytest.raises(ValueError, match=r"reads its settings from data.shards, a ShardsConfig; DataConfig has no"):
        DataConfig(source="shards")


def test_the_shapes_section_checks_its_fields():
    with pytest.raises(ValueError, match="data.shapes.two_object_fraction must be in"):
        ShapesDataConfig(two_object_fraction=1.5)
    with pytest.raises(ValueError, match="data.shapes.num_examples must be positive"):
        ShapesDataConfig(num_examples=0)
    with pytest.raises(ValueError, match="splits 'train' and 'heldout'"):
        ShapesSource(4, 16, split="test")
