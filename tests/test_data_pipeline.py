"""Input pipeline: batch contents, caption dropout, inpaint masks, resumable state, host sharding."""

import sys

import jax
import numpy as np
import pytest

from glide_jax.data import input_pipeline, shapes, tfds_builders
from glide_jax.data.masks import MAX_ERASE, MIN_ERASE
from glide_jax.train.sharding import batch_sharding

N_TRAIN = 64


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    builder = tfds_builders.prepare_shapes(str(tmp_path_factory.mktemp("tfds")), size=32, num_train=N_TRAIN, num_heldout=8)
    return builder.data_dir


def length_tokenizer(captions):
    """Trivial stand-in for a real tokenizer: token 0 is the caption length."""
    n = len(captions)
    tokens = np.zeros((n, 6), np.int32)
    tokens[:, 0] = [len(c) for c in captions]
    return {"tokens": tokens, "mask": tokens > 0}


class MemorySource:
    """In-memory source of tiny records with unique captions."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": np.full((8, 8, 3), i % 256, np.uint8), "caption": f"caption {i}".encode()}

    def __repr__(self):
        return f"MemorySource({self.n})"


def _config(**kw):
    base = dict(image_size=32, global_batch_size=8, seed=3)
    base.update(kw)
    return input_pipeline.PipelineConfig(**base)


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_shapes_dtypes_and_values(shapes_dir):
    source = input_pipeline.open_source(shapes_dir, "train")
    it = input_pipeline.make_iterator(source, _config(low_res_size=8, inpaint=True, caption_dropout=0.0), length_tokenizer)
    batch = next(it)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["low_res"].shape == (8, 8, 8, 3) and batch["low_res"].dtype == np.float32
    assert batch["inpaint_mask"].shape == (8, 32, 32, 1) and batch["inpaint_mask"].dtype == np.float32
    assert batch["tokens"].shape == (8, 6) and batch["tokens"].dtype == np.int32 and batch["mask"].dtype == bool
    assert batch["example_id"].dtype == np.int32 and batch["caption"].shape == (8,)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    for i, key in enumerate(batch["example_id"]):
        record = source[int(key)]
        np.testing.assert_allclose(batch["image"][i], record["image"] / 127.5 - 1, atol=1e-6)
        assert batch["caption"][i] == record["caption"].decode()
        assert batch["tokens"][i, 0] == len(record["caption"])
        shapes.parse_caption(batch["caption"][i])
    # Background pixels: 200 -> 200 / 127.5 - 1; the low-res image is the 4x4 block mean.
    np.testing.assert_allclose(batch["image"][:, 0, 0], 200 / 127.5 - 1, atol=1e-6)
    blocks = batch["image"].reshape(8, 8, 4, 8, 4, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(batch["low_res"], blocks, atol=1e-6)
    assert "tensorflow" not in sys.modules


def test_resize_to_model_size(shapes_dir):
    source = input_pipeline.open_source(shapes_dir, "train")
    small = next(input_pipeline.make_iterator(source, _config(image_size=16)))
    assert small["image"].shape == (8, 16, 16, 3)
    full = source[int(small["example_id"][0])]["image"] / 127.5 - 1
    np.testing.assert_allclose(small["image"][0], full.reshape(16, 2, 16, 2, 3).mean((1, 3)), atol=1e-6)
    odd = next(input_pipeline.make_iterator(source, _config(image_size=24)))  # non-integer factor: Lanczos
    assert odd["image"].shape == (8, 24, 24, 3) and np.abs(odd["image"]).max() <= 1
    wide = np.zeros((10, 20, 3), np.uint8)
    wide[:, 5:15] = 255
    assert np.all(input_pipeline.to_model_image(wide, 5) == 1.0)  # centre crop, then area mean


def test_caption_dropout_rate_and_determinism():
    n, p = 2000, 0.2
    cfg = input_pipeline.PipelineConfig(image_size=8, global_batch_size=50, seed=9, num_epochs=1, caption_dropout=p)
    batches = list(input_pipeline.make_iterator(MemorySource(n), cfg, length_tokenizer))
    captions = np.concatenate([b["caption"] for b in batches])
    assert len(captions) == n
    dropped = int((captions == "").sum())
    sd = np.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 4.5 * sd, dropped  # 400 +- 80
    # Tokenization happened after dropout: dropped captions were tokenized as "".
    tokens0 = np.concatenate([b["tokens"][:, 0] for b in batches])
    assert np.all((tokens0 == 0) == (captions == ""))
    again = np.concatenate([b["caption"] for b in input_pipeline.make_iterator(MemorySource(n), cfg, length_tokenizer)])
    np.testing.assert_array_equal(captions, again)
    for q, expected in ((0.0, 0), (1.0, 200)):
        cfg_q = input_pipeline.PipelineConfig(image_size=8, global_batch_size=50, seed=9, num_epochs=1, caption_dropout=q)
        caps = np.concatenate([b["caption"] for b in input_pipeline.make_iterator(MemorySource(200), cfg_q)])
        assert (caps == "").sum() == expected


def test_inpaint_masks_in_batches():
    cfg = input_pipeline.PipelineConfig(image_size=16, global_batch_size=32, seed=1, inpaint=True, caption_dropout=0.0)
    batch = next(input_pipeline.make_iterator(MemorySource(64), cfg))
    m = batch["inpaint_mask"]
    assert m.shape == (32, 16, 16, 1) and set(np.unique(m)) == {0.0, 1.0}
    erased = 1 - m.mean(axis=(1, 2, 3))
    assert erased.min() >= MIN_ERASE and erased.max() <= MAX_ERASE and erased.std() > 0.05
    # Turning masks on does not change the dropout/captions stream.
    cfg_plain = input_pipeline.PipelineConfig(image_size=16, global_batch_size=32, seed=1, caption_dropout=0.0)
    np.testing.assert_array_equal(next(input_pipeline.make_iterator(MemorySource(64), cfg_plain))["caption"], batch["caption"])


def test_iterator_state_restore(shapes_dir):
    source = input_pipeline.open_source(shapes_dir, "train")
    cfg = _config(inpaint=True, low_res_size=16)  # 64 records, 8 per batch: runs into the 2nd epoch
    it = input_pipeline.make_iterator(source, cfg, length_tokenizer)
    start_state = it.get_state()
    first = next(it)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = input_pipeline.make_iterator(input_pipeline.open_source(shapes_dir, "train"), cfg, length_tokenizer, state=state)
    for a, b in zip(expected, [next(resumed) for _ in range(3)]):
        assert _equal(a, b)
    assert _equal(first, next(input_pipeline.make_iterator(source, cfg, length_tokenizer, state=start_state)))
    # A second epoch is reshuffled, with fresh dropout/mask draws.
    assert not np.array_equal(first["example_id"], expected[0]["example_id"])
    # A different seed gives a different stream.
    other = next(input_pipeline.make_iterator(source, _config(seed=4)))
    assert not np.array_equal(other["example_id"], first["example_id"])


@pytest.mark.parametrize("count", [2, 3])
def test_host_sharding_is_disjoint(count):
    n = 60
    seen = []
    for index in range(count):
        cfg = input_pipeline.PipelineConfig(image_size=8, global_batch_size=5 * count, seed=5, num_epochs=1)
        it = input_pipeline.make_iterator(MemorySource(n), cfg, shard_index=index, shard_count=count)
        ids = np.concatenate([b["example_id"] for b in it])
        assert len(ids) == n // count and len(set(ids.tolist())) == len(ids)
        seen.append(set(ids.tolist()))
    for i in range(count):
        for j in range(i + 1, count):
            assert not seen[i] & seen[j]
    assert set().union(*seen) == set(range(n))


def test_default_shards_follow_jax_processes():
    opts = input_pipeline.shard_options()
    assert (opts.shard_index, opts.shard_count) == (jax.process_index(), jax.process_count())
    with pytest.raises(ValueError):
        input_pipeline.shard_options(2, 2)
    with pytest.raises(ValueError):
        input_pipeline.make_loader(MemorySource(10), input_pipeline.PipelineConfig(global_batch_size=5), shard_index=0, shard_count=2)
    with pytest.raises(ValueError):
        input_pipeline.PipelineConfig(image_size=64, low_res_size=24)


def test_tokenizer_output_is_checked():
    bad = input_pipeline.Collate(lambda caps: {"image": np.zeros((len(caps), 2))})
    with pytest.raises(ValueError):
        bad([{"caption": "a", "image": np.zeros(2)}])
    short = input_pipeline.Collate(lambda caps: {"tokens": np.zeros((1, 2))})
    with pytest.raises(ValueError):
        short([{"caption": "a", "image": np.zeros(2)}, {"caption": "b", "image": np.zeros(2)}])


def test_global_batch_on_a_mesh():
    cfg = input_pipeline.PipelineConfig(image_size=8, global_batch_size=4, seed=0, caption_dropout=0.0)
    local = next(input_pipeline.make_iterator(MemorySource(16), cfg, length_tokenizer))
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    sharding = batch_sharding(mesh)
    out = input_pipeline.global_batch(local, sharding)
    assert "caption" not in out and set(out) == {"image", "example_id", "tokens", "mask"}
    for k, v in out.items():
        assert isinstance(v, jax.Array) and v.shape == local[k].shape and v.sharding == sharding
        np.testing.assert_array_equal(np.asarray(v), local[k])
