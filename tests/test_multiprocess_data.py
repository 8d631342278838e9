"""The global batch does not depend on how many hosts (or grain workers) read it.

Hosts are simulated in one process (``shard_index`` / ``shard_count`` /
``rows``); the multi-process runs themselves are in ``test_multiprocess.py``.
"""

import numpy as np
import pytest

from glide_jax.data import input_pipeline

GLOBAL_BATCH = 8
STEPS = 5


class Records:
    """In-memory records whose image encodes the index (module level: grain workers unpickle it)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": np.full((8, 8, 3), i % 256, np.uint8), "caption": f"record {i}".encode()}

    def __repr__(self):
        return f"Records({self.n})"


def _config(workers=0, **kw):
    return input_pipeline.PipelineConfig(image_size=8, global_batch_size=GLOBAL_BATCH, seed=3, worker_count=workers,
                                         caption_dropout=0.5, **kw)


def _global_batches(hosts, workers=0, rows=None, steps=STEPS):
    """Per step: the hosts' batches laid side by side in the rows they read."""
    per_host = []
    for index in range(hosts):
        it = input_pipeline.make_iterator(Records(100), _config(workers), shard_index=index, shard_count=hosts,
                                          rows=None if rows is None else rows[index])
        per_host.append([next(it) for _ in range(steps)])
    order = np.argsort(np.concatenate(rows)) if rows is not None else np.arange(GLOBAL_BATCH)
    out = []
    for step in range(steps):
        merged = {k: np.concatenate([per_host[h][step][k] for h in range(hosts)])[order]
                  for k in ("example_id", "caption", "image")}
        out.append(merged)
    return out


@pytest.fixture(scope="module")
def one_host():
    return _global_batches(1)


def _assert_same(batches, reference):
    for got, want in zip(batches, reference, strict=True):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_read_disjoint_rows_of_the_one_global_batch(one_host, hosts):
    batches = _global_batches(hosts)
    _assert_same(batches, one_host)  # ids, captions after dropout, images: the same global batch
    ids = np.stack([b["example_id"] for b in one_host])
    assert len(set(ids.ravel().tolist())) == ids.size  # 40 distinct records in 5 steps of 8


def test_rows_need_not_be_contiguous(one_host):
    # e.g. a mesh whose device order interleaves the hosts along the batch
    _assert_same(_global_batches(2, rows=[[0, 1, 4, 5], [2, 3, 6, 7]]), one_host)


@pytest.mark.slow  # starts 4 grain worker processes (~14 s)
def test_grain_workers_do_not_change_the_global_batch(one_host):
    _assert_same(_global_batches(2, workers=2), one_host)


def test_host_rows_follow_the_sharding():
    import jax

    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    assert input_pipeline.host_rows(sharding, 8) == list(range(8))  # one process holds every row
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    assert input_pipeline.host_rows(replicated, 8) == list(range(8))


def test_bad_rows_are_refused():
    stream = input_pipeline.grain.samplers.IndexSampler(num_records=10, shuffle=False, num_epochs=1)
    for rows in ([], [2, 1], [0, 8], [1, 1]):
        with pytest.raises(ValueError, match="host rows"):
            input_pipeline.GlobalBatchRows(stream, 8, rows)


def test_finite_stream_stops_after_the_last_whole_global_batch():
    cfg = input_pipeline.PipelineConfig(image_size=8, global_batch_size=6, seed=1, num_epochs=1)
    hosts = [np.concatenate([b["example_id"] for b in input_pipeline.make_iterator(Records(20), cfg, shard_index=i,
                                                                                   shard_count=2)])
             for i in range(2)]
    single = np.concatenate([b["example_id"] for b in input_pipeline.make_iterator(Records(20), cfg)])
    assert len(single) == 18 and [len(h) for h in hosts] == [9, 9]
    np.testing.assert_array_equal(np.concatenate([hosts[0].reshape(3, 3), hosts[1].reshape(3, 3)], axis=1).ravel(),
                                  single)
