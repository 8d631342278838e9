"""Checkpoints: fall-back past a damaged latest step, data-iterator position, retention, inpainting init."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glide_jax.train import state as state_lib
from glide_jax.train.checkpointing import (CORRUPT_DIR, AllCheckpointsCorruptError, Checkpointer,
                                          CorruptCheckpointWarning)
from glide_jax.train.experiment import load_config_file
from glide_jax.data import shapes
from glide_jax.data.shapes_source import ShapesSource
from glide_jax.train.inputs import make_iterator

# A failed Orbax read leaves TensorStore handles and an event-loop callback to be collected later.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(step: int) -> state_lib.TrainState:
    params = {"w": jnp.arange(600.0).reshape(6, 100) + step, "b": jnp.full((3,), float(step))}
    st = state_lib.create_state(params, optax.adam(1e-3), seed=5)
    return st.replace(step=jnp.int32(step), skipped=jnp.int32(step // 2))


def _abstract():
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), _state(0))


def _save_steps(workdir, steps, **kw):
    ck = Checkpointer(workdir, async_save=False, **kw)
    for s in steps:
        ck.save(_state(s), f'{{"step": {s}}}'.encode(), {"task": "base", "saved_at": s})
    ck.close()


def _damage(workdir: Path, step: int, how: str) -> None:
    files = sorted((workdir / "checkpoints" / str(step) / "train").rglob("ocdbt.process_0/d/*"))
    biggest = max(files, key=lambda f: f.stat().st_size)
    if how == "truncate":
        with open(biggest, "r+b") as f:
            f.truncate(biggest.stat().st_size // 2)
    elif how == "delete_ema":
        for f in (workdir / "checkpoints" / str(step) / "ema_params").rglob("ocdbt.process_0/d/*"):
            f.unlink()
    elif how == "delete_manifest":
        (workdir / "checkpoints" / str(step) / "train" / "manifest.ocdbt").unlink()


def test_restore_gives_back_exactly_what_was_saved(tmp_path):
    _save_steps(tmp_path, [1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, experiment = Checkpointer(tmp_path).restore(_abstract())
    want = _state(3)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    assert experiment == {"task": "base", "saved_at": 3}


@pytest.mark.parametrize("how", ["truncate", "delete_ema", "delete_manifest"])
def test_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path, how):
    _save_steps(tmp_path, [1, 2, 3])
    _damage(tmp_path, 3, how)
    ck = Checkpointer(tmp_path)
    with pytest.warns(CorruptCheckpointWarning, match="step 3"):
        state, experiment = ck.restore(_abstract())
    assert int(state.step) == 2 and experiment["saved_at"] == 2
    np.testing.assert_array_equal(state.params["w"], _state(2).params["w"])
    # The damaged step is moved aside, so training can save step 3 again.
    assert ck.all_steps() == [1, 2]
    assert len(list((tmp_path / CORRUPT_DIR).iterdir())) == 1
    ck.save(_state(3), b'{"step": 3}')
    ck.close()
    assert int(Checkpointer(tmp_path).restore(_abstract())[0].step) == 3


def test_no_checkpoint_means_a_fresh_start_but_only_corrupt_ones_stop_the_run(tmp_path):
    assert Checkpointer(tmp_path).restore(_abstract()) is None
    _save_steps(tmp_path, [1, 2])
    _damage(tmp_path, 1, "truncate")
    _damage(tmp_path, 2, "delete_ema")
    with pytest.warns(CorruptCheckpointWarning), pytest.raises(AllCheckpointsCorruptError, match="none of the 2"):
        Checkpointer(tmp_path).restore(_abstract())
    assert Checkpointer(tmp_path).all_steps() == [1, 2] and not (tmp_path / CORRUPT_DIR).exists()
    # Asked to, the run sets them all aside and starts again.
    ck = Checkpointer(tmp_path)
    with pytest.warns(CorruptCheckpointWarning):
        assert ck.restore(_abstract(), restart_if_corrupt=True) is None
    assert ck.all_steps() == [] and len(list((tmp_path / CORRUPT_DIR).iterdir())) == 2


def test_keep_last_n_plus_every_kth(tmp_path):
    _save_steps(tmp_path, range(1, 11), keep_last=2, keep_every=4)
    assert Checkpointer(tmp_path).all_steps() == [4, 8, 9, 10]


def _cfg():
    return load_config_file(f"{Path(__file__).resolve().parents[1]}/experiments/configs/base.py:micro")


def test_data_iterator_resumes_at_the_next_batch(tmp_path):
    cfg = _cfg()
    source = ShapesSource(64, 16)
    tok = None  # the position in the stream does not depend on tokenization
    it = make_iterator(cfg, source, tok)
    next(it), next(it)
    ck = Checkpointer(tmp_path, async_save=False)
    ck.save(_state(2), it.get_state())
    ck.close()
    expected = next(it)
    fresh = make_iterator(cfg, source, tok)
    Checkpointer(tmp_path).restore(_abstract(), fresh)
    got = next(fresh)
    np.testing.assert_array_equal(got["example_id"], expected["example_id"])
    np.testing.assert_array_equal(got["image"], expected["image"])
    assert list(got["caption"]) == list(expected["caption"])  # caption dropout decisions included


def test_unreadable_iterator_state_disqualifies_the_checkpoint(tmp_path):
    cfg = _cfg()
    source = ShapesSource(64, 16)
    it = make_iterator(cfg, source, None)
    ck = Checkpointer(tmp_path, async_save=False)
    ck.save(_state(1), it.get_state())
    next(it)
    ck.save(_state(2), it.get_state())
    ck.close()
    (tmp_path / "checkpoints" / "2" / "data" / "process_0-of-1.json").write_text('{"trunc')
    fresh = make_iterator(cfg, source, None)
    with pytest.warns(CorruptCheckpointWarning, match="step 2"):
        state, _ = Checkpointer(tmp_path).restore(_abstract(), fresh)
    assert int(state.step) == 1
    np.testing.assert_array_equal(next(fresh)["example_id"], next(make_iterator(cfg, source, None))["example_id"])


def test_iterator_state_of_another_dataset_is_an_error_and_nothing_moves(tmp_path):
    from glide_jax.train.checkpointing import IncompatibleCheckpointError

    cfg = _cfg()
    it = make_iterator(cfg, ShapesSource(64, 16), None)
    next(it)
    ck = Checkpointer(tmp_path, async_save=False)
    ck.save(_state(1), it.get_state())
    ck.close()
    other = make_iterator(cfg, ShapesSource(64, 16, seed=5), None)
    with pytest.raises(IncompatibleCheckpointError, match="another data source.*Nothing was moved"):
        Checkpointer(tmp_path).restore(_abstract(), other)
    assert Checkpointer(tmp_path).all_steps() == [1] and not (tmp_path / "checkpoints.corrupt").exists()
    # The scene mix is a rendering option, not another dataset: resuming may change it (a curriculum).
    mixed = make_iterator(cfg, ShapesSource(64, 16, p_two=0.9), None)
    state, _ = Checkpointer(tmp_path).restore(_abstract(), mixed)
    assert int(state.step) == 1
    pairs = ShapesSource(64, 16, p_two=1.0, pair_layout="halves", relations=("above",))
    state, _ = Checkpointer(tmp_path).restore(_abstract(), make_iterator(cfg, pairs, None))
    assert int(state.step) == 1
    assert all(shapes.parse_caption(pairs[i]["caption"].decode()).relation == "above" for i in range(8))
    with pytest.raises(ValueError, match="two-object scenes"):
        ShapesSource(64, 16, p_two=-0.1)
