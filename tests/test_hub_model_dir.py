"""The one model-directory format: round trips in float32 and float16, atomic and refusing writes, old folders."""

import json

import numpy as np
import pytest

from glide_jax.config import get_preset
from glide_jax.hub import model_dir
from model_files import read_card


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"params": {"a": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
                       "b": rng.normal(size=(5,)).astype(np.float32)}}


def test_float32_round_trip_is_exact_and_writes_only_what_was_given(tmp_path):
    config, params = get_preset("tiny-base"), _params()
    stats = model_dir.save_model_dir(tmp_path / "m", config, params)
    assert stats == {"num_params": 17, "dtype": "float32", "max_abs_rounding": 0.0}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "params.zip"]
    got_config, got = model_dir.load_model_dir(tmp_path / "m")
    assert got_config == config
    np.testing.assert_array_equal(got["params"]["a"]["kernel"], params["params"]["a"]["kernel"])
    np.testing.assert_array_equal(got["params"]["b"], params["params"]["b"])
    with np.load(tmp_path / "m" / "params.zip") as npz:
        assert sorted(npz.files) == ["params/a/kernel", "params/b"] and npz["params/b"].dtype == np.float32


def test_float16_round_trip_widens_on_load_and_keeps_the_extras(tmp_path):
    config, params = get_preset("tiny-clip"), _params(1)
    tokenizer = tmp_path / "vocab.model"
    tokenizer.write_bytes(b"sentencepiece bytes")
    sampling = {"sampler": "ddim", "steps": 7, "prompt_rewrites": [{"pattern": "x", "replacement": "y"}]}
    stats = model_dir.save_model_dir(tmp_path / "m", config, params, dtype="float16", tokenizer_file=tokenizer,
                                     sampling=sampling, card={"trained": "on shapes"})
    assert stats["dtype"] == "float16" and 0 < stats["max_abs_rounding"] < 2e-3
    folder = tmp_path / "m"
    assert (folder / "tokenizer.model").read_bytes() == b"sentencepiece bytes"
    assert model_dir.tokenizer_file(folder) == folder / "tokenizer.model"
    assert model_dir.read_sampling_file(folder) == sampling
    assert read_card(folder) == {"trained": "on shapes", **stats}
    with np.load(folder / "params.zip") as npz:
        assert npz["params/b"].dtype == np.float16
    got_config, got = model_dir.load_model_dir(folder)
    assert got_config == config and got["params"]["b"].dtype == np.float32
    np.testing.assert_allclose(got["params"]["b"], params["params"]["b"], atol=2e-3)
    np.testing.assert_array_equal(got["params"]["b"], params["params"]["b"].astype(np.float16).astype(np.float32))


def test_writes_refuse_to_replace_overflow_or_guess(tmp_path):
    config = get_preset("tiny-base")
    model_dir.save_model_dir(tmp_path / "m", config, _params(0))
    before = (tmp_path / "m" / "params.zip").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        model_dir.save_model_dir(tmp_path / "m", config, _params(1))
    assert (tmp_path / "m" / "params.zip").read_bytes() == before
    model_dir.save_model_dir(tmp_path / "m", config, _params(1), overwrite=True)
    assert (tmp_path / "m" / "params.zip").read_bytes() != before
    with pytest.raises(ValueError, match="float16 range.*params/b"):
        model_dir.save_model_dir(tmp_path / "n", config, {"params": {"b": np.array([1e6], np.float32)}},
                                 dtype="float16")
    with pytest.raises(ValueError, match="Flax variables"):
        model_dir.save_model_dir(tmp_path / "n", config, {"b": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="dtype must be one of float32, float16"):
        model_dir.save_model_dir(tmp_path / "n", config, _params(), dtype="bfloat16")
    with pytest.raises(FileNotFoundError, match="tokenizer file"):
        model_dir.save_model_dir(tmp_path / "n", config, _params(), tokenizer_file=tmp_path / "missing.model")
    assert not (tmp_path / "n").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left behind


def test_old_and_incomplete_folders_say_what_to_do(tmp_path):
    old = tmp_path / "old"
    (old / "params").mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"__type__": "ClipConfig"}))
    with pytest.raises(model_dir.OutdatedModelDirError, match=r"retired Orbax format.*glide-jax convert NAME"):
        model_dir.load_model_dir(old)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no params.zip"):
        model_dir.load_model_dir(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        model_dir.load_model_dir(tmp_path)
    assert not model_dir.is_model_dir(old) and not model_dir.is_model_dir(tmp_path / "half")
