"""Checkpoint files: the torch-free .pt reader, model directories and the conversion tool."""

import pickle
import struct
import zipfile

import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.hub.model_dir import save_model_dir
from glide_jax.hub.registry import load_model
from glide_jax.hub.torch_zip import load_state_dict
from glide_jax.config import get_preset
from glide_jax.parity.fixtures import load_fixture, prefixed


def _unicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def write_torch_zip(path, tensors, extra_pickle: bytes = b""):
    """Write a state dict the way ``torch.save`` lays it out (zip + protocol-2 pickle), without torch."""
    names = {np.dtype(np.float32): b"FloatStorage", np.dtype(np.float16): b"HalfStorage",
             np.dtype(np.int64): b"LongStorage"}
    body = b"\x80\x02" + b"ccollections\nOrderedDict\n)R" + b"("
    blobs = {}
    for i, (name, (array, stride)) in enumerate(tensors.items()):
        key = str(i)
        blobs[key] = np.ascontiguousarray(array).tobytes()
        pid = _tuple([_unicode("storage"), b"ctorch\n" + names[array.dtype] + b"\n", _unicode(key), _unicode("cpu"),
                      _int(array.size)])
        shape, strides = stride
        args = _tuple([pid + b"Q", _int(0), _tuple(_int(s) for s in shape), _tuple(_int(s) for s in strides), b"\x89",
                       b"ccollections\nOrderedDict\n)R"])
        body += _unicode(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    body += b"u" + extra_pickle + b"."
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", body)
        for key, blob in blobs.items():
            z.writestr(f"archive/data/{key}", blob)
        z.writestr("archive/version", "3\n")


def test_torch_zip_reader_handles_dtypes_and_strides(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = np.linspace(-1, 1, 6).astype(np.float16)
    # a transposed (non-contiguous) view: storage is a (4, 3) row-major buffer read with strides (1, 3)
    base = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_torch_zip(tmp_path / "m.pt", {
        "w": (a, (a.shape, (4, 1))),
        "h": (h, (h.shape, (1,))),
        "t": (base, ((3, 4), (1, 3))),
        "n": (np.array([7], np.int64), ((), ())),
    })
    sd = load_state_dict(tmp_path / "m.pt")
    np.testing.assert_array_equal(sd["w"], a)
    assert sd["h"].dtype == np.float16 and np.array_equal(sd["h"], h)
    np.testing.assert_array_equal(sd["t"], base.T)
    assert sd["n"].shape == () and int(sd["n"]) == 7


def test_torch_zip_reader_refuses_code(tmp_path):
    evil = b"\x80\x02cos\nsystem\n" + _unicode("echo pwned") + b"\x85R."
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("archive/data.pkl", evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load os.system"):
        load_state_dict(tmp_path / "evil.pt")
    # a pickle's first byte sends the file to the legacy-format reader, which finds no magic number
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match="legacy.pt: the magic-number pickle .* is malformed"):
        load_state_dict(tmp_path / "legacy.pt")
    (tmp_path / "text.pt").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="text.pt is not a PyTorch checkpoint: it starts with '<htm'"):
        load_state_dict(tmp_path / "text.pt")


def test_convert_tool_roundtrip_and_never_overwrites(tmp_path, capsys):
    from tools.convert_checkpoint import main

    meta, arrays = load_fixture(require_fixture("models/text2im.npz"))
    state = prefixed(arrays, "state/")
    write_torch_zip(tmp_path / "t2i.pt", {k: (v, (v.shape, tuple(s // v.itemsize for s in v.strides)))
                                          for k, v in state.items()})
    kwargs = require_fixture("models/text2im.json")
    out = tmp_path / "model"
    assert main(["--reference-kwargs", str(kwargs), "--pt", str(tmp_path / "t2i.pt"), "--out", str(out)]) == 0
    config, params = load_model(str(out))
    assert config.unet.image_size == 32 and config.unet.text.width == 32
    np.testing.assert_array_equal(params["params"]["unet"]["out_2"]["bias"], state["out.2.bias"])
    before = (out / "config.json").read_text()
    assert main(["--reference-kwargs", str(kwargs), "--pt", str(tmp_path / "t2i.pt"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "config.json").read_text() == before
    # a state dict for another architecture is rejected with the offending keys named
    assert main(["--preset", "tiny-upsample", "--pt", str(tmp_path / "t2i.pt"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "missing keys" in err and not (tmp_path / "x").exists()


def test_store_roundtrip_and_released_names_explain_missing_download(tmp_path):
    cfg = get_preset("tiny-clip")
    params = {"params": {"logit_scale": np.float32(4.6), "w": np.ones((2, 3), np.float32)}}
    save_model_dir(tmp_path / "c", cfg, params)
    got_cfg, got = load_model(str(tmp_path / "c"))
    assert got_cfg == cfg and np.array_equal(got["params"]["w"], params["params"]["w"])
    with pytest.raises(FileNotFoundError, match="glide-jax download base"):
        load_model("base", cache_dir=tmp_path / "empty-cache")
