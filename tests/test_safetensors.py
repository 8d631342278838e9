"""The torch-free safetensors reader: exact round trips of every dtype, and hostile files refused before any read."""

import os
import struct

import ml_dtypes
import numpy as np
import pytest

from glide_jax.hub.checkpoint_zip import CheckpointFormatError
from glide_jax.hub.safetensors import load_safetensors, read_safetensors_header
from safetensors_files import write_raw, write_safetensors


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.normal(size=(3, 4)).astype(np.float32),
        "f16": rng.normal(size=(5,)).astype(np.float16),
        "bf16": rng.normal(size=(2, 3)).astype(ml_dtypes.bfloat16),
        "f64": rng.normal(size=(2,)),
        "i64": np.array([-(2 ** 62), 0, 2 ** 62 + 7], np.int64),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "u8": np.arange(250, 256, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "f8": np.array([0.5, -2.0, 448.0], ml_dtypes.float8_e4m3fn),
        "scalar": np.float32(2.5).reshape(()),
        "empty": np.zeros((0, 7), np.float32),
        "big_endian": np.arange(4, dtype=">f4"),
    }


def test_round_trip_every_dtype(tmp_path):
    tensors = _tensors()
    path = write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"format": "pt"})
    loaded = load_safetensors(path)
    assert sorted(loaded) == sorted(tensors)
    for name, want in tensors.items():
        got = loaded[name]
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype.newbyteorder("="), name
        assert got.flags.writeable
        np.testing.assert_array_equal(got.astype(np.float64), np.asarray(want).astype(np.float64), err_msg=name)
    entries, metadata = read_safetensors_header(path)
    assert metadata == {"format": "pt"}
    assert entries["bf16"].dtype == "BF16" and entries["bf16"].shape == (2, 3) and entries["bf16"].nbytes == 12


def test_load_only_named_tensors(tmp_path):
    path = write_safetensors(tmp_path / "t.safetensors", _tensors())
    assert list(load_safetensors(path, names=["i32"])) == ["i32"]
    with pytest.raises(KeyError, match="nope"):
        load_safetensors(path, names=["nope"])


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, header_length, message", [
    ({"a": _entry()}, b"\0" * 8, 1 << 40, "over the"),  # header length over the cap
    ({"a": _entry()}, b"\0" * 8, 4096, "past the end"),
    (b"[1, 2]", b"", None, "not a JSON object"),
    (b"{\"a\": ", b"", None, "not valid UTF-8 JSON"),
    (b"{\"a\": 1, \"a\": 2}", b"", None, "twice"),
    ({"a": _entry(dtype="F128")}, b"\0" * 8, None, "unknown dtype"),
    ({"a": _entry(shape=(3,))}, b"\0" * 8, None, "needs 12 bytes but data_offsets span 8"),
    ({"a": _entry(offsets=(0, 16))}, b"\0" * 8, None, "do not lie within"),
    ({"a": _entry(offsets=(8, 0))}, b"\0" * 8, None, "do not lie within"),
    ({"a": _entry(shape=(-2,))}, b"\0" * 8, None, "non-negative integer"),
    ({"a": _entry(shape=(2.0,))}, b"\0" * 8, None, "non-negative integer"),
    ({"a": _entry(shape=(True, 2))}, b"\0" * 8, None, "non-negative integer"),
    ({"a": _entry(shape=(1,) * 33)}, b"\0" * 8, None, "at most 32"),
    ({"a": _entry(shape=(1 << 60, 0))}, b"", None, "over 281474976710656"),
    ({"a": _entry(), "b": _entry(offsets=(4, 12))}, b"\0" * 12, None, "overlaps"),
    ({"a": _entry(), "b": _entry(offsets=(12, 20))}, b"\0" * 20, None, "gap"),
    ({"a": _entry()}, b"\0" * 12, None, "cover 8 bytes of the 12-byte"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "exactly dtype, shape and data_offsets"),
    ({"__metadata__": {"k": 1}, "a": _entry()}, b"\0" * 8, None, "strings to strings"),
    ({"": _entry()}, b"\0" * 8, None, "non-empty string"),
])
def test_hostile_headers_are_refused(tmp_path, header, data, header_length, message):
    path = write_raw(tmp_path / "bad.safetensors", header, data, header_length)
    with pytest.raises(CheckpointFormatError, match=message) as info:
        load_safetensors(path)
    assert str(path) in str(info.value)


def test_too_short_file_is_refused(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<I", 0))
    with pytest.raises(CheckpointFormatError, match="too short"):
        load_safetensors(path)


def test_tensor_size_limit(tmp_path):
    path = write_safetensors(tmp_path / "t.safetensors", {"a": np.zeros(64, np.float32)})
    with pytest.raises(CheckpointFormatError, match="max_tensor_bytes"):
        load_safetensors(path, max_tensor_bytes=100)
    assert load_safetensors(path, max_tensor_bytes=256)["a"].shape == (64,)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_non_regular_files_are_refused_before_opening(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # opening it for reading would block until a writer appears
    with pytest.raises(CheckpointFormatError, match="not a regular file"):
        load_safetensors(fifo)
    with pytest.raises(CheckpointFormatError, match="not a regular file"):
        read_safetensors_header(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(CheckpointFormatError, match="not a regular file"):
            load_safetensors("/dev/zero")
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "absent.safetensors")
