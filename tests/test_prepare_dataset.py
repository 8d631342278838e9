"""Image-caption datasets from folder and tar shards: skips counted, plain and Beam builds equal.

The collection made here has ~300 usable small images in 3 folders and 4 WebDataset tar
shards, and one of every defect the readers know (corrupt and truncated images, missing
captions and images, malformed caption rows, duplicate keys, a truncated tar, images the
size filter rejects). The expected counts are tallied while writing it, independently of
the code under test.
"""

import collections
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glide_jax.data import caption_shards, image_examples, input_pipeline, tfds_builders

REPO = Path(__file__).resolve().parents[1]
SIZE = 16  # stored side; the default filter then asks for a shorter side of at least 16


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _good_image(rng) -> np.ndarray:
    h = int(rng.integers(SIZE, 40))
    w = int(rng.integers(max(SIZE, h * 2 // 3 + 1), min(h * 3 // 2, 40) + 1))  # aspect within 1.5
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


class Collection:
    """Writes the shards under ``root`` and tallies what a build must count."""

    def __init__(self, root: Path, seed: int = 0):
        self.root, self.rng = root, np.random.default_rng(seed)
        self.counts = collections.Counter()
        self.captions = {}  # expected key -> caption of every written example
        self.sources = []

    def written(self, key: str, caption: str):
        self.counts["written"] += 1
        self.captions[key] = caption

    def folder(self, index: int, num_good: int, defects: bool, filtered: bool):
        folder = self.root / f"folder{index}"
        folder.mkdir()
        rows = []
        for i in range(num_good):
            fmt = ("png", "jpeg")[i % 2]
            name = f"img{i}.{'png' if fmt == 'png' else 'jpg'}"
            (folder / name).write_bytes(_encode(_good_image(self.rng), fmt.upper()))
            caption = f"folder {index} image {i}"
            rows.append(json.dumps({"file": name, "caption": f"  {caption} "}))  # stored stripped
            self.written(f"{index}:{name}", caption)
        if defects:
            (folder / "garbage.png").write_bytes(b"not an image at all")
            rows.append(json.dumps({"file": "garbage.png", "caption": "garbage"}))
            png = _encode(self.rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "PNG")
            (folder / "truncated.png").write_bytes(png[: len(png) // 2])  # the header parses, the pixels do not
            rows.append(json.dumps({"file": "truncated.png", "caption": "truncated"}))
            (folder / "uncaptioned.png").write_bytes(_encode(_good_image(self.rng), "PNG"))
            (folder / "blank.png").write_bytes(_encode(_good_image(self.rng), "PNG"))
            rows.append(json.dumps({"file": "blank.png", "caption": "   "}))
            rows.append(json.dumps({"file": "gone.png", "caption": "its file is missing"}))
            rows.append(json.dumps({"image": "img0.png"}))
            rows.append("{not json")
            rows.append(json.dumps({"file": "img1.jpg", "caption": "listed twice"}))
            self.counts.update(corrupt_image=2, missing_caption=2, missing_image=1, malformed_caption_row=2,
                               duplicate_key=1)
        if filtered:
            (folder / "tiny.png").write_bytes(_encode(np.zeros((SIZE - 1, 30, 3), np.uint8), "PNG"))
            (folder / "wide.png").write_bytes(_encode(np.zeros((20, 41, 3), np.uint8), "PNG"))
            rows += [json.dumps({"file": name, "caption": name}) for name in ("tiny.png", "wide.png")]
            self.counts.update(too_small=1, extreme_aspect=1)
        (folder / "captions.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        self.sources.append(str(folder))

    def tar(self, path: Path, index: int, num_good: int, defects: bool = False, filtered: bool = False,
            cut_in_sample: int = -1):
        """A WebDataset shard; ``cut_in_sample >= 0`` truncates the file inside that sample's image."""
        members = []  # (name, bytes)
        for i in range(num_good):
            key = f"{i:06d}"
            caption = f"tar {index} sample {i}"
            style = i % 4
            if style == 0:
                members += [(f"{key}.jpg", _encode(_good_image(self.rng), "JPEG")), (f"{key}.txt", caption.encode())]
            elif style == 1:
                members += [(f"{key}.png", _encode(_good_image(self.rng), "PNG")),
                            (f"{key}.json", json.dumps({"caption": caption, "width": 1}).encode())]
            elif style == 2:
                members += [(f"{key}.jpeg", _encode(_good_image(self.rng), "JPEG")),
                            (f"{key}.json", json.dumps({"text": caption}).encode())]
            else:  # .txt wins over the metadata's caption; other members are ignored
                members += [(f"{key}.webp" if i % 8 == 3 else f"{key}.png", _encode(_good_image(self.rng), "PNG")),
                            (f"{key}.json", json.dumps({"caption": "not this one"}).encode()),
                            (f"{key}.txt", caption.encode()), (f"{key}.parquet", b"ignored")]
            if i < cut_in_sample or cut_in_sample < 0:
                self.written(f"{index}:{key}", caption)
        if defects:
            good = _encode(_good_image(self.rng), "PNG")
            members += [("nocap.png", good), ("nocap2.png", good), ("nocap2.json", b'{"url": "x"}'),
                        ("spaces.png", good), ("spaces.txt", b" \n"), ("badjson.png", good), ("badjson.json", b"{oops"),
                        ("lonely.txt", b"no image"), ("broken.jpg", b"\xff\xd8\xff garbage"), ("broken.txt", b"x"),
                        ("twice.png", good), ("twice.jpg", good), ("twice.txt", b"two images"),
                        ("000001.png", good), ("000001.txt", b"a later sample reusing a key")]
            self.counts.update(missing_caption=4, missing_image=1, corrupt_image=1, duplicate_key=2)
        if filtered:
            members += [("small.png", _encode(np.zeros((8, 8, 3), np.uint8), "PNG")), ("small.txt", b"small"),
                        ("tall.png", _encode(np.zeros((60, 20, 3), np.uint8), "PNG")), ("tall.txt", b"tall")]
            self.counts.update(too_small=1, extreme_aspect=1)
        buffer = io.BytesIO()
        cut = None
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                if cut is None and name.startswith(f"{cut_in_sample:06d}."):
                    cut = archive.offset + 512 + len(data) // 2  # inside this member's data (after its header)
                archive.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        if cut_in_sample >= 0:
            data = data[:cut]
            self.counts.update(unreadable_shard=1)
        path.write_bytes(data)

    @classmethod
    def make(cls, root: Path) -> "Collection":
        c = cls(root)
        c.folder(0, 40, defects=True, filtered=False)
        c.folder(1, 40, defects=False, filtered=True)
        (root / "tars").mkdir()
        c.tar(root / "tars" / "00000.tar", 2, 50, defects=True)
        c.tar(root / "tars" / "00001.tar", 3, 50, filtered=True)
        c.tar(root / "tars" / "00002.tar", 4, 40, cut_in_sample=30)
        c.sources.append(str(root / "tars"))  # a folder of tar shards: 3 shards, indices 2..4
        c.folder(5, 30, defects=False, filtered=False)
        c.tar(root / "00005.tar", 6, 40)
        c.sources.append(str(root / "0000[5].tar"))  # a glob
        return c

    def expected_counts(self):
        return {name: self.counts.get(name, 0) for name in image_examples.COUNT_NAMES}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Collection:
    return Collection.make(tmp_path_factory.mktemp("collection"))


def _records(builder):
    source = builder.as_data_source("train")
    out = {}
    for i in range(len(source)):
        record = source[i]
        out[record["key"].decode()] = (record["caption"].decode(), record["image"])
    return out, [source[i]["key"].decode() for i in range(len(source))]


def test_find_shards(collection, tmp_path):
    shards = caption_shards.find_shards(collection.sources)
    assert [(s.index, s.kind, Path(s.path).name) for s in shards] == [
        (0, "folder", "folder0"), (1, "folder", "folder1"), (2, "tar", "00000.tar"), (3, "tar", "00001.tar"),
        (4, "tar", "00002.tar"), (5, "folder", "folder5"), (6, "tar", "00005.tar")]
    (tmp_path / "empty").mkdir()
    for bad in ([str(tmp_path / "empty")], [str(tmp_path / "nothing")], [str(tmp_path / "*.tar")], []):
        with pytest.raises(caption_shards.ShardError):
            caption_shards.find_shards(bad)


def test_plain_build_counts_and_examples(collection, tmp_path):
    builder = tfds_builders.prepare_folders(str(tmp_path), collection.sources, size=SIZE)
    assert tfds_builders.build_counts(builder) == collection.expected_counts()
    records, _ = _records(builder)
    assert {key: caption for key, (caption, _) in records.items()} == collection.captions
    assert builder.info.splits["train"].num_examples == collection.counts["written"] == 280
    for caption, image in records.values():
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    # The stored pixels are the centre crop + Lanczos resize of the file.
    folder = Path(collection.sources[0])
    with Image.open(folder / "img3.jpg") as img:
        np.testing.assert_array_equal(records["0:img3.jpg"][1], image_examples.center_crop_resize(img, SIZE))
    # The counts survive a reload of the dataset folder.
    reloaded = tfds_builders.prepare_folders(str(tmp_path), collection.sources, size=SIZE)
    assert tfds_builders.build_counts(reloaded) == collection.expected_counts()


def test_filter_settings_change_the_counts(collection, tmp_path):
    # A shorter side of 8 lets the 15-pixel image in (upscaled); aspect 3.5 lets both elongated ones in.
    builder = tfds_builders.prepare_folders(str(tmp_path), collection.sources, size=SIZE, min_side=8, max_aspect=3.5)
    counts = tfds_builders.build_counts(builder)
    expected = collection.expected_counts()
    assert counts["too_small"] == 0 and counts["extreme_aspect"] == 0
    assert counts["written"] == expected["written"] + expected["too_small"] + expected["extreme_aspect"]
    with pytest.raises(ValueError, match="max_aspect"):
        tfds_builders.folder_config(collection.sources, SIZE, max_aspect=0.5)
    with pytest.raises(ValueError, match="min_side"):
        tfds_builders.folder_config(collection.sources, SIZE, min_side=0)


def test_a_build_that_keeps_nothing_says_so(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"junk")
    (tmp_path / "src" / "captions.jsonl").write_text(json.dumps({"file": "a.jpg", "caption": "x"}) + "\n")
    with pytest.raises(tfds_builders.EmptyDatasetError, match=r"written=0 skipped=1 \(corrupt_image=1\)"):
        tfds_builders.prepare_folders(str(tmp_path / "data"), [str(tmp_path / "src")], size=SIZE)


def test_upsampler_reads_the_large_images(tmp_path):
    """The upsampler's training reads ``image`` at its high-res size; its 64-px input is the box
    average the input pipeline makes (here at 4x smaller sizes)."""
    c = Collection(tmp_path / "src")
    (tmp_path / "src").mkdir()
    c.folder(0, 6, defects=False, filtered=False)
    builder = tfds_builders.prepare_folders(str(tmp_path / "data"), c.sources, size=SIZE, min_side=8)
    config = input_pipeline.PipelineConfig(image_size=SIZE, low_res_size=4, global_batch_size=4, caption_dropout=0.0)
    source = input_pipeline.open_source(builder.data_dir)
    loader = input_pipeline.make_loader(source, config, shard_index=0, shard_count=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["low_res"].shape == (4, 4, 4, 3)
    np.testing.assert_allclose(batch["low_res"][0], input_pipeline.area_downsample(batch["image"][0], 4), atol=1e-6)
    assert set(batch["caption"]) <= set(c.captions.values())


def test_a_build_says_it_builds_and_never_that_it_downloads(collection, tmp_path, capsys):
    """TFDS' own line ("Downloading and preparing dataset Unknown size ...") is replaced: nothing is downloaded."""
    tfds_builders.prepare_folders(str(tmp_path / "folders"), collection.sources[:1], size=SIZE)
    tfds_builders.prepare_shapes(str(tmp_path / "shapes"), size=16, num_train=2, num_heldout=1)
    out, err = capsys.readouterr()
    assert "ownload" not in out + err.replace("(nothing is downloaded)", "")
    said = [line.strip() for line in err.splitlines() if line.strip().startswith(("Building", "Built"))]
    assert said[0].startswith("Building dataset image_caption_folder/") and said[0].endswith(
        "from local sources (nothing is downloaded)...")
    assert said[-1].startswith("Built dataset captioned_shapes/s16_n2_h1_seed0 1.0.0 in ") and len(said) == 4


def _cli(*args, expect=0):
    done = subprocess.run([sys.executable, "-m", "tools.prepare_dataset", *args], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == expect, done.stderr
    return done.stdout if expect == 0 else done.stderr


def test_cli_two_sizes_and_errors(collection, tmp_path):
    out = _cli("images", "--src", *collection.sources[:2], "--size", "16", "32", "--name", "mine",
               "--data-dir", str(tmp_path))
    # Our lines: each dataset's folder and splits, then its counts (TFDS prints progress lines between).
    lines = [line for line in out.splitlines() if "{'train':" in line or line.startswith("  written=")]
    assert lines[0].endswith("image_caption_folder/mine_16/2.0.0 {'train': 80}")
    assert lines[1].strip() == ("written=80 skipped=10 (missing_image=1, missing_caption=2, corrupt_image=2, "
                                "too_small=1, extreme_aspect=1, duplicate_key=1, malformed_caption_row=2)")
    # At 32 the default filter asks for a shorter side of 32: most of the 16..39-pixel images go.
    assert lines[2].endswith("image_caption_folder/mine_32/2.0.0 {'train': %d}" % int(lines[3].split()[0][8:]))
    assert "too_small=" in lines[3]
    err = _cli("images", "--src", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path), expect=2)
    assert "error:" in err and "nowhere" in err
    err = _cli("images", "--src", collection.sources[0], "--max-aspect", "0.5", "--data-dir", str(tmp_path), expect=2)
    assert "error:" in err and "max_aspect" in err
    if importlib.util.find_spec("apache_beam") is None:
        err = _cli("images", "--src", collection.sources[0], "--beam-runner", "DirectRunner", "--data-dir",
                   str(tmp_path), expect=2)
        assert "error:" in err and "glide-jax[beam]" in err


def test_beam_build_equals_plain_build(collection, tmp_path):
    pytest.importorskip("apache_beam", reason="apache-beam is not installed (pip install 'glide-jax[beam]')")
    plain = tfds_builders.prepare_folders(str(tmp_path / "plain"), collection.sources, size=SIZE)
    beam = tfds_builders.prepare_folders(str(tmp_path / "beam"), collection.sources, size=SIZE,
                                         beam_runner="DirectRunner")
    assert tfds_builders.build_counts(beam) == tfds_builders.build_counts(plain) == collection.expected_counts()
    plain_records, plain_order = _records(plain)
    beam_records, beam_order = _records(beam)
    assert set(beam_records) == set(plain_records) == set(collection.captions)
    for key, (caption, image) in plain_records.items():
        assert beam_records[key][0] == caption
        np.testing.assert_array_equal(beam_records[key][1], image)
    assert beam_order == plain_order  # both writers order records by the hash of their keys
    # The command line reports the Beam counters as it reports the plain counts.
    out = _cli("images", "--src", *collection.sources[:2], "--size", str(SIZE), "--data-dir", str(tmp_path / "cli"),
               "--beam-runner", "DirectRunner", "--beam-options=--direct_num_workers=1")
    assert "  written=80 skipped=10 (missing_image=1, missing_caption=2, corrupt_image=2, too_small=1, " \
           "extreme_aspect=1, duplicate_key=1, malformed_caption_row=2)\n" in out
