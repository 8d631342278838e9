"""TFDS builders: array_record datasets written and read back through grain without TensorFlow."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
import pytest
from PIL import Image

from glide_jax.data import image_examples, shapes, tfds_builders

REPO = Path(__file__).resolve().parents[1]


def _no_tensorflow():
    assert "tensorflow" not in sys.modules
    assert importlib.util.find_spec("tensorflow") is None


def test_shapes_builder_roundtrip_through_grain(tmp_path):
    builder = tfds_builders.prepare_shapes(str(tmp_path), size=32, num_train=24, num_heldout=6, seed=7)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 24, "heldout": 6}
    assert list(builder.data_path.glob("*.array_record*"))
    for split, split_id, n in (("train", 0, 24), ("heldout", 1, 6)):
        source = builder.as_data_source(split)
        assert len(source) == n
        loader = grain.DataLoader(
            data_source=source,
            sampler=grain.samplers.IndexSampler(n, grain.sharding.NoSharding(), shuffle=False, num_epochs=1, seed=0),
            worker_count=0,
        )
        records = list(loader)
        assert len(records) == n
        # The stored examples are exactly the renders of their per-index generators
        # (records are stored in a hashed key order, so compare as sets).
        expected = {}
        for i in range(n):
            img, cap, _ = shapes.render_example(np.random.default_rng([7, split_id, i]), 32, split)
            expected[cap.encode() + img.tobytes()] = i
        got = set()
        for r in records:
            assert r["image"].dtype == np.uint8 and r["image"].shape == (32, 32, 3)
            assert isinstance(r["caption"], bytes)
            got.add(r["caption"] + r["image"].tobytes())
        assert got == set(expected)
    _no_tensorflow()


def test_prepare_reuses_and_reads_from_directory(tmp_path):
    from glide_jax.data.input_pipeline import open_source

    b1 = tfds_builders.prepare_shapes(str(tmp_path), size=16, num_train=5, num_heldout=2, seed=1)
    b2 = tfds_builders.prepare_shapes(str(tmp_path), size=16, num_train=5, num_heldout=2, seed=1)
    assert b1.data_dir == b2.data_dir
    src = open_source(b1.data_dir, "heldout")
    assert len(src) == 2 and shapes.parse_caption(src[0]["caption"].decode()).relation is not None
    other = tfds_builders.prepare_shapes(str(tmp_path), size=16, num_train=5, num_heldout=2, seed=2)
    assert other.data_dir != b1.data_dir
    _no_tensorflow()


def _write_folder(folder, images, captions, extra_rows=()):
    folder.mkdir()
    rows = []
    for i, (arr, cap) in enumerate(zip(images, captions)):
        Image.fromarray(arr).save(folder / f"img{i}.png")
        rows.append({"file": f"img{i}.png", "caption": cap})
    rows += list(extra_rows)
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_folder_builder(tmp_path):
    rng = np.random.default_rng(0)
    solid = np.zeros((30, 50, 3), np.uint8)
    solid[:, 10:40] = (10, 200, 30)  # the centred 30x30 square is all green; the sides are cropped away
    noisy = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 24), (16, 16), (64, 48))]
    _write_folder(tmp_path / "a", [solid, noisy[0]], ["a green square", "café crème"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.jpg").write_bytes(b"not an image")
    _write_folder(tmp_path / "c", noisy[1:], ["x", "y"])
    bjson = tmp_path / "b" / "captions.jsonl"
    bjson.write_text(json.dumps({"file": "broken.jpg", "caption": "skipped"}) + "\n")

    builder = tfds_builders.prepare_folders(str(tmp_path / "data"), [str(tmp_path / d) for d in "abc"], size=16)
    src = builder.as_data_source("train")
    assert len(src) == 4  # the unreadable image is skipped
    assert tfds_builders.build_counts(builder) == dict(image_examples.empty_counts(), written=4, corrupt_image=1)
    assert {src[i]["key"].decode() for i in range(4)} == {"0:img0.png", "0:img1.png", "2:img0.png", "2:img1.png"}
    by_caption = {src[i]["caption"].decode(): src[i]["image"] for i in range(len(src))}
    assert set(by_caption) == {"a green square", "café crème", "x", "y"}
    assert all(v.shape == (16, 16, 3) and v.dtype == np.uint8 for v in by_caption.values())
    assert np.all(by_caption["a green square"] == (10, 200, 30))
    np.testing.assert_array_equal(by_caption["x"], noisy[1])  # already 16x16: untouched
    expected = image_examples.center_crop_resize(Image.fromarray(noisy[0]), 16)
    np.testing.assert_array_equal(by_caption["café crème"], expected)
    _no_tensorflow()


def test_folder_builder_errors(tmp_path):
    # A listed file that is missing is counted, not fatal; a source that is no shard is an error.
    _write_folder(tmp_path / "a", [np.zeros((8, 8, 3), np.uint8)], ["ok"], [{"file": "missing.png", "caption": "?"}])
    builder = tfds_builders.prepare_folders(str(tmp_path / "data"), [str(tmp_path / "a")], size=8)
    assert tfds_builders.build_counts(builder) == dict(image_examples.empty_counts(), written=1, missing_image=1)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="captions.jsonl"):
        tfds_builders.prepare_folders(str(tmp_path / "data"), [str(tmp_path / "plain")], size=8)
    with pytest.raises(ValueError):
        tfds_builders.folder_config([])


def test_center_crop_resize():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # the central square
    out = image_examples.center_crop_resize(Image.fromarray(img), 10)
    assert out.shape == (10, 10, 3) and np.all(out == 255)
    gray = Image.fromarray(np.full((12, 12), 77, np.uint8), mode="L")
    assert np.all(image_examples.center_crop_resize(gray, 6) == 77)


def _cli(*args):
    done = subprocess.run([sys.executable, "-m", "tools.prepare_dataset", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli(tmp_path):
    out = _cli("shapes", "--size", "16", "--num", "6", "--num-heldout", "2", "--data-dir", str(tmp_path))
    assert "'train': 6" in out and "'heldout': 2" in out
    _write_folder(tmp_path / "imgs", [np.full((20, 20, 3), 9, np.uint8)], ["nine"])
    out = _cli("folder", "--src", str(tmp_path / "imgs"), "--size", "8", "--name", "mine", "--data-dir", str(tmp_path))
    assert "image_caption_folder/mine/2.0.0 {'train': 1}\n  written=1 skipped=0\n" in out
