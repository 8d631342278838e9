"""Downloads of the evaluation networks (FID Inception, Hugging Face CLIP) against a local HTTP server."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_clipscore_fixture, require_fid_fixture
from pt_files import PtFile, TensorRef
from safetensors_files import write_safetensors
from test_download import server  # noqa: F401 (the local HTTP server fixture)

from glide_jax import cli
from glide_jax.hub import download as dl
from glide_jax.hub import evaluation_weights as ew
from glide_jax.hub.convert_hf_clip import hf_shapes, load_hf_clip
from glide_jax.hub.convert_inception import load_inception
from glide_jax.hub.remote_file import digest_prefix_in_name
from glide_jax.models.clip_vit import ClipVitConfig
from glide_jax.tokenizers.hf_clip import HFClipTokenizer


def _pt_file(state) -> PtFile:
    """``state`` (name -> array) as a torch state dict, one storage per tensor."""
    arrays = {name: np.array(array, order="C") for name, array in state.items()}
    tensors = [TensorRef(name, str(i), 0, array.shape, tuple(step // array.itemsize for step in array.strides))
               for i, (name, array) in enumerate(arrays.items())]
    return PtFile({str(i): array.reshape(-1) for i, array in enumerate(arrays.values())}, tensors)


def _files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".lock", dl.RECORD_SUFFIX)))


# ----------------------------------------------------------------------------- FID Inception

SMALL_INCEPTION = {"Conv2d_1a_3x3.conv.weight": (4, 3, 3, 3), "Conv2d_1a_3x3.bn.weight": (4,)}


@pytest.fixture
def small_inception(monkeypatch):
    """Make the FID Inception a two-tensor network, so a small file can pass (or fail) its checks."""
    monkeypatch.setattr(ew, "inception_torch_shapes", lambda: dict(SMALL_INCEPTION))


def _small_inception_state(**shapes):
    rng = np.random.default_rng(0)
    layout = {**SMALL_INCEPTION, **shapes}
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in layout.items()}


def _serve_inception(server, monkeypatch, body: bytes, prefix: str = None) -> str:
    """Serve ``body`` under a pytorch-fid-style name ending in ``prefix`` (default: its true digest)."""
    prefix = prefix or hashlib.sha256(body).hexdigest()[:8]
    name = f"pt_inception-test-{prefix}.pth"
    server.add("/fid_weights/" + name, body)
    monkeypatch.setattr(ew, "INCEPTION_URL", f"{server.url}/fid_weights/{name}")
    return name


def test_the_inception_download_is_pytorch_fids_file_named_by_its_digest():
    remote = ew.inception_remote()
    assert remote.url == ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                          "pt_inception-2015-12-05-6726825d.pth")
    assert remote.sha256_prefix == "6726825d" and remote.filename == "pt_inception-2015-12-05-6726825d.pth"
    assert digest_prefix_in_name("model-0123abcdef.bin") == "0123abcdef"
    with pytest.raises(ValueError, match="does not end in '-<hex digits of its SHA-256>"):
        digest_prefix_in_name("pt_inception.pth")
    assert {"inception", "clip-vit-b32", "clip-vit-b16", "clip-vit-l14"} <= set(dl.known_names())


@pytest.mark.parametrize("legacy", [False, True])
def test_inception_weights_download_when_digest_and_structure_match(server, tmp_path, monkeypatch, small_inception,
                                                                    legacy):
    state = _small_inception_state()
    # the released file may be in torch's legacy format, with the classifier and batch-norm counters FID drops
    state["fc.bias"] = np.zeros(ew.INCEPTION_CLASSES, np.float32)
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.zeros((), np.int64)
    body = _pt_file(state).legacy_bytes() if legacy else _pt_file(state).zip_bytes()
    name = _serve_inception(server, monkeypatch, body)
    path = dl.download("inception", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / name and path.read_bytes() == body
    record = json.loads((tmp_path / (name + dl.RECORD_SUFFIX)).read_text())
    assert record["sha256"].startswith(name[-12:-4]) and record["bytes"] == len(body)


@pytest.mark.parametrize("problem, match", [
    ("digest", r"SHA-256 [0-9a-f]{64} does not start with 00000000, as the file's name promises"),
    ("shape", r"wrong shape: Conv2d_1a_3x3.conv.weight"),
    ("missing", r"missing: Conv2d_1a_3x3.bn.weight"),
    ("extra", r"unexpected: Mixed_5b.conv.weight"),
    ("classifier", r"wrong shape: fc.weight"),
    ("html", r"not pytorch-fid's FID Inception|not a PyTorch checkpoint"),
])
def test_inception_weights_that_fail_a_check_leave_nothing(server, tmp_path, monkeypatch, small_inception,
                                                           problem, match):
    state = _small_inception_state()
    if problem == "shape":
        state = _small_inception_state(**{"Conv2d_1a_3x3.conv.weight": (4, 3, 1, 1)})
    elif problem == "missing":
        del state["Conv2d_1a_3x3.bn.weight"]
    elif problem == "extra":
        state["Mixed_5b.conv.weight"] = np.ones((1,), np.float32)
    elif problem == "classifier":
        state["fc.weight"] = np.ones((1000, 2048), np.float32)  # torchvision's ImageNet head, not the FID one
    body = b"<html>rate limited</html>" if problem == "html" else _pt_file(state).zip_bytes()
    name = _serve_inception(server, monkeypatch, body, prefix="00000000" if problem == "digest" else None)
    with pytest.raises(dl.DownloadError, match=match) as caught:
        dl.download("inception", cache_dir=tmp_path, progress=False)
    assert f"nothing was saved as {name}" in str(caught.value)
    assert _files(tmp_path) == []


def test_the_fixture_inception_has_the_released_layout_and_converts():
    weights = require_fid_fixture("pt_inception-random.pth")  # the real file's keys and shapes, random values
    ew.verify_inception(weights)
    assert len(ew.inception_torch_shapes()) == 94 * 5  # 94 convolutions: a kernel and four batch-norm tensors each
    assert load_inception(weights)["params"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 3, 32)


# ----------------------------------------------------------------------------- Hugging Face CLIP

CLIP_FOLDER_FILES = ["config.json", "merges.txt", "preprocessor_config.json", "special_tokens_map.json",
                     "tokenizer_config.json", "vocab.json"]


@pytest.fixture
def clip_repo(server, monkeypatch):
    """The tiny CLIP fixture served as ``openai/clip-vit-base-patch32`` from ``$HF_ENDPOINT``, its count pinned."""
    source = require_clipscore_fixture("clip_model")
    config = ClipVitConfig.from_hf_dict(json.loads((source / "config.json").read_text()))
    shapes = hf_shapes(config)
    rng = np.random.default_rng(1)
    weights = {name: rng.normal(scale=0.02, size=shape).astype(np.float32) for name, shape in shapes.items()}
    monkeypatch.setenv(ew.HF_ENDPOINT_ENV, server.url + "/")
    monkeypatch.setitem(ew.HF_CLIP_MODELS, "clip-vit-b32",
                        ew.HFClipModel("openai/clip-vit-base-patch32", sum(w.size for w in weights.values())))

    def serve(filename: str, body: bytes):
        server.add(f"/openai/clip-vit-base-patch32/resolve/main/{filename}", body)

    for filename in CLIP_FOLDER_FILES:
        serve(filename, (source / filename).read_bytes())
    return serve, weights


def _safetensors_bytes(tmp_path, weights) -> bytes:
    return write_safetensors(tmp_path / "weights.safetensors", weights).read_bytes()


def test_a_clip_checkpoint_downloads_into_a_folder_that_loads(clip_repo, tmp_path):
    serve, weights = clip_repo
    serve("model.safetensors", _safetensors_bytes(tmp_path, weights))
    folder = dl.download("clip-vit-b32", cache_dir=tmp_path / "cache", progress=False)
    assert folder == tmp_path / "cache" / "clip-vit-b32"
    assert _files(folder) == sorted(CLIP_FOLDER_FILES + ["model.safetensors"])
    config, params = load_hf_clip(folder)
    np.testing.assert_array_equal(params["visual_projection"]["kernel"], weights["visual_projection.weight"].T)
    assert HFClipTokenizer.from_directory(folder).encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_a_clip_repository_without_safetensors_gives_its_pytorch_model_bin(clip_repo, tmp_path, server):
    serve, weights = clip_repo
    serve("pytorch_model.bin", _pt_file(weights).zip_bytes())
    folder = dl.download("clip-vit-b32", cache_dir=tmp_path, progress=False)
    assert "pytorch_model.bin" in _files(folder) and "model.safetensors" not in _files(folder)
    assert load_hf_clip(folder)[1]["logit_scale"] == weights["logit_scale"]
    hits = len(server.hits)
    assert dl.download("clip-vit-b32", cache_dir=tmp_path, progress=False) == folder
    assert len(server.hits) == hits  # everything cached: the server is not asked again, not even for safetensors


@pytest.mark.parametrize("problem, match", [
    ("shape", r"model.safetensors: .*wrong shape: text_model.embeddings.token_embedding.weight"),
    ("missing", r"model.safetensors: .*missing: logit_scale"),
    ("integer", r"model.safetensors: .*not floating point: logit_scale"),
    ("count", r"config.json: .*describes a CLIP of 3,505,281 parameters; openai/clip-vit-base-patch32 has 7"),
    ("vocab", r"vocab.json: .*holds 3 tokens; the model's vocabulary has 49408"),
    ("merges", r"merges.txt: .*CLIP needs 48894 'left right' merges, the file has 1 such lines"),
])
def test_a_clip_file_that_fails_its_check_is_not_kept(clip_repo, tmp_path, monkeypatch, problem, match):
    serve, weights = clip_repo
    if problem == "shape":
        weights["text_model.embeddings.token_embedding.weight"] = np.zeros((10, 64), np.float32)
    elif problem == "missing":
        del weights["logit_scale"]
    elif problem == "integer":
        weights["logit_scale"] = np.zeros((), np.int32)
    elif problem == "count":
        monkeypatch.setitem(ew.HF_CLIP_MODELS, "clip-vit-b32", ew.HFClipModel("openai/clip-vit-base-patch32", 7))
    elif problem == "vocab":
        serve("vocab.json", json.dumps({"a": 0, "b": 1, "c": 2}).encode())
    else:
        serve("merges.txt", b"#version: 0.2\na b\n")
    serve("model.safetensors", _safetensors_bytes(tmp_path, weights))
    with pytest.raises(dl.DownloadError, match=match):
        dl.download("clip-vit-b32", cache_dir=tmp_path / "cache", progress=False)
    failed = match.split(":")[0]
    assert failed not in _files(tmp_path / "cache" / "clip-vit-b32")


def test_the_cli_downloads_evaluation_networks(server, tmp_path, monkeypatch, small_inception, capsys):
    body = _pt_file(_small_inception_state()).zip_bytes()
    name = _serve_inception(server, monkeypatch, body)
    assert cli.main(["download", "inception", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / name)
    assert cli.main(["download", "clip-vit-b64", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown download 'clip-vit-b64'; known: " in capsys.readouterr().err
