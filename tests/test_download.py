"""The checkpoint / vocabulary downloader, against a local HTTP server (never the network)."""

import base64
import dataclasses
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_fixture
from pt_files import PtFile, TensorRef

from glide_jax.hub import download as dl
from glide_jax.tokenizers import ClipTokenizer, GlideBPETokenizer

PAYLOAD = np.random.default_rng(0).bytes(300_000)


class _Files:
    """What the test server serves: path -> (body, announced Content-Length), plus a hit log."""

    def __init__(self):
        self.url = ""
        self.routes = {}
        self.hits = []
        self.headers = {}
        self.delay = 0.0
        self.drip = None  # (bytes, seconds): send the body in pieces this big, this far apart

    def add(self, path: str, body: bytes, announced: int = None, headers=None):
        """Serve ``body``; ``announced=-1`` sends no Content-Length (the transfer ends when the server closes)."""
        self.routes[path] = (body, len(body) if announced is None else announced)
        self.headers[path] = dict(headers or {})


def _handler(files: _Files):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            files.hits.append(self.path)
            if self.path not in files.routes:
                self.send_error(404)
                return
            body, announced = files.routes[self.path]
            self.send_response(200)
            if announced >= 0:
                self.send_header("Content-Length", str(announced))
            for name, value in files.headers.get(self.path, {}).items():
                self.send_header(name, value)
            self.end_headers()
            time.sleep(files.delay)
            self.close_connection = True  # a short body then ends the transfer early
            if files.drip is None:
                self.wfile.write(body)
                return
            piece, pause = files.drip
            for start in range(0, len(body), piece):  # bounded by the body; ends early when the client leaves
                try:
                    self.wfile.write(body[start:start + piece])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(pause)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server():
    files = _Files()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    files.url = f"http://127.0.0.1:{httpd.server_port}"
    yield files
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_writes_the_file_and_reuses_it(server, tmp_path, monkeypatch):
    server.add("/base.pt", PAYLOAD)
    monkeypatch.setitem(dl.CHECKPOINTS, "base", dl.RemoteFile(server.url + "/base.pt"))
    path = dl.download("base", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "base.pt"
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o077 == 0o666 & ~_umask() & 0o077  # not private to the writer
    assert dl.download("base", cache_dir=tmp_path, progress=False) == path
    assert server.hits == ["/base.pt"]  # the second call did not touch the server


def test_default_cache_dir_follows_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.delenv(dl.CACHE_ENV, raising=False)
    assert dl.default_cache_dir() == Path.home() / ".cache" / "glide_jax"
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "cache"))
    assert dl.default_cache_dir() == tmp_path / "cache"
    server.add("/clip_text_enc.pt", PAYLOAD[:1000])
    monkeypatch.setitem(dl.CHECKPOINTS, "clip/text-enc", dl.RemoteFile(server.url + "/clip_text_enc.pt"))
    path = dl.download("clip/text-enc", progress=True)
    assert path == tmp_path / "cache" / "clip_text_enc.pt"
    assert path.read_bytes() == PAYLOAD[:1000]


def test_short_download_is_deleted_and_raises(server, tmp_path, monkeypatch):
    server.add("/upsample.pt", PAYLOAD[:300], announced=1000)
    monkeypatch.setitem(dl.CHECKPOINTS, "upsample", dl.RemoteFile(server.url + "/upsample.pt"))
    with pytest.raises(dl.DownloadError, match="received 300 bytes but the server announced 1000"):
        dl.download("upsample", cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "upsample.pt").exists()
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_is_deleted_and_raises(server, tmp_path):
    server.add("/encoder.json.gz", b"not the vocabulary")
    remote = dl.RemoteFile(server.url + "/encoder.json.gz", sha256="0" * 64)
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.fetch(remote, tmp_path, progress=False)
    assert not (tmp_path / "encoder.json.gz").exists()
    assert _leftovers(tmp_path) == []


def test_http_error_raises_download_error(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="404"):
        dl.fetch(dl.RemoteFile(server.url + "/missing.pt"), tmp_path, progress=False)
    assert not (tmp_path / "missing.pt").exists()


def test_concurrent_downloads_of_one_file_fetch_it_once(server, tmp_path):
    server.add("/base_inpaint.pt", PAYLOAD)
    server.delay = 0.3  # keep the first transfer busy while the others wait on the lock
    remote = dl.RemoteFile(server.url + "/base_inpaint.pt")
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(dl.fetch(remote, tmp_path, progress=False)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert results == [tmp_path / "base_inpaint.pt"] * 3
    assert server.hits == ["/base_inpaint.pt"]
    assert (tmp_path / "base_inpaint.pt").read_bytes() == PAYLOAD


def test_file_urls_work(tmp_path):
    source = tmp_path / "src" / "upsample_inpaint.pt"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD[:5000])
    path = dl.fetch(dl.RemoteFile(source.as_uri()), tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / "upsample_inpaint.pt"
    assert path.read_bytes() == PAYLOAD[:5000]


def test_tokenizer_vocabularies_download_and_load(server, tmp_path, monkeypatch):
    vocab_dir = require_fixture("tokenizer")
    for name, remote in dl.TOKENIZER_FILES.items():
        server.add("/" + name, (vocab_dir / name).read_bytes())
        local = dl.RemoteFile(f"{server.url}/{name}", remote.sha256)  # the pinned digest is checked
        monkeypatch.setitem(dl.TOKENIZER_FILES, name, local)
    folder = dl.download("tokenizers", cache_dir=tmp_path, progress=False)
    assert folder == tmp_path
    cached = [p.name for p in folder.iterdir() if not p.name.endswith((".lock", dl.RECORD_SUFFIX))]
    assert sorted(cached) == sorted(dl.TOKENIZER_FILES)
    assert GlideBPETokenizer.load(folder).encode("an oil painting of a corgi") == [
        272, 3056, 12036, 286, 257, 1162, 12397
    ]
    assert ClipTokenizer.load(folder).n_vocab == 49408


def test_pinned_vocabulary_digests_match_the_reference_files():
    reference = json.loads(require_fixture("tokenizer/tokens.json").read_text())["files"]
    for name, remote in dl.TOKENIZER_FILES.items():
        assert remote.sha256 == reference[name]["sha256"]
        assert hashlib.sha256(require_fixture(f"tokenizer/{name}").read_bytes()).hexdigest() == remote.sha256
        assert remote.url == (
            "https://raw.githubusercontent.com/openai/glide-text2im/main/glide_text2im/tokenizer/" + name
        )


def test_known_checkpoints_and_unknown_names():
    assert list(dl.CHECKPOINTS) == [
        "base", "upsample", "base-inpaint", "upsample-inpaint", "clip/image-enc", "clip/text-enc"
    ]
    assert dl.CHECKPOINTS["clip/image-enc"].url == (
        "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/clip_image_enc.pt"
    )
    with pytest.raises(ValueError, match=r"'base-256'.*base, upsample, .*clip/text-enc, tokenizers"):
        dl.download("base-256")


# ----------------------------------------------------------------------------- verified checkpoints


def _small_checkpoint() -> bytes:
    """A .pt whose layout plays the part of a released checkpoint's (see ``released_layout``)."""
    weights = np.arange(1, 25, dtype=np.float32)
    return PtFile({"0": weights}, [TensorRef("conv.weight", "0", 0, (2, 3, 2, 2), (12, 4, 2, 1)),
                                    TensorRef("conv.bias", "0", 0, (2,), (1,))]).zip_bytes()


@pytest.fixture
def released_layout(monkeypatch):
    """Make ``base`` a two-tensor model, so a small file can pass (or fail) the released-checkpoint checks."""
    from glide_jax.hub import verify

    monkeypatch.setattr(verify, "expected_shapes", lambda name: {"conv.weight": (2, 3, 2, 2), "conv.bias": (2,)})
    monkeypatch.setitem(verify.RELEASED_PARAMETERS, "base", (2, 26))


def _remote(server, name="base"):
    return dataclasses.replace(dl.CHECKPOINTS[name], url=server.url + "/" + dl.CHECKPOINTS[name].filename)


def test_a_checkpoint_is_verified_before_it_takes_its_name_and_its_download_is_recorded(
        server, tmp_path, monkeypatch, released_layout):
    body = _small_checkpoint()
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    server.add("/base.pt", body, announced=-1, headers={"Content-MD5": md5, "ETag": '"0x8D9"'})
    monkeypatch.setitem(dl.CHECKPOINTS, "base", _remote(server))
    path = dl.download("base", cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == body
    record = json.loads((tmp_path / ("base.pt" + dl.RECORD_SUFFIX)).read_text())
    assert record["bytes"] == len(body) and record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["etag"] == '"0x8D9"' and record["content_md5"] == md5


@pytest.mark.parametrize("problem, match", [
    ("truncated", "not a zip archive"),  # no Content-Length to catch it: the structure does
    ("wrong_shape", "wrong shape: conv.weight"),
    ("missing", "missing: conv.bias"),
    ("bad_crc", "fails its CRC check"),
    ("content_md5", "Content-MD5"),
])
def test_a_checkpoint_that_fails_verification_leaves_nothing_behind(
        server, tmp_path, monkeypatch, released_layout, problem, match):
    body, headers = _small_checkpoint(), {}
    weights = np.arange(1, 25, dtype=np.float32)
    if problem == "truncated":
        body = body[: len(body) // 2]
    elif problem == "wrong_shape":
        body = PtFile({"0": weights}, [TensorRef("conv.weight", "0", 0, (3, 2, 2, 2), (8, 4, 2, 1)),
                                       TensorRef("conv.bias", "0", 0, (2,), (1,))]).zip_bytes()
    elif problem == "missing":
        body = PtFile({"0": weights}, [TensorRef("conv.weight", "0", 0, (2, 3, 2, 2), (12, 4, 2, 1))]).zip_bytes()
    elif problem == "bad_crc":
        at = body.index(weights.tobytes()) + 5
        body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
    else:
        headers["Content-MD5"] = base64.b64encode(b"0" * 16).decode()
    server.add("/base.pt", body, announced=-1 if problem == "truncated" else None, headers=headers)
    monkeypatch.setitem(dl.CHECKPOINTS, "base", _remote(server))
    with pytest.raises(dl.DownloadError, match=match) as caught:
        dl.download("base", cache_dir=tmp_path, progress=False)
    assert "nothing was saved as base.pt" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_a_cached_file_that_lost_bytes_is_set_aside_and_fetched_again(server, tmp_path, monkeypatch, released_layout):
    body = _small_checkpoint()
    server.add("/base.pt", body)
    monkeypatch.setitem(dl.CHECKPOINTS, "base", _remote(server))
    path = dl.download("base", cache_dir=tmp_path, progress=False)
    path.write_bytes(body[:100])  # e.g. a disk that filled up while another tool rewrote it
    with pytest.warns(UserWarning, match="no longer has the size it was downloaded with"):
        assert dl.download("base", cache_dir=tmp_path, progress=False) == path
    assert path.read_bytes() == body and server.hits == ["/base.pt", "/base.pt"]
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == body[:100]  # kept, not deleted


@pytest.mark.slow  # abstract shapes of the six released models (~9 s)
def test_the_pinned_parameter_counts_are_the_released_checkpoints_manifests():
    from glide_jax.hub import verify

    for name, (tensors, parameters) in verify.RELEASED_PARAMETERS.items():
        manifest = json.loads(require_fixture(f"manifests/{name.replace('/', '-')}.json").read_text())
        assert (manifest["num_tensors"], manifest["total_params"]) == (tensors, parameters)
        assert {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]} == verify.expected_shapes(name)


# ----------------------------------------------------------------------------- slow servers and interruptions


def test_a_server_that_drips_bytes_fails_on_the_minimum_rate(server, tmp_path):
    server.add("/base.pt", PAYLOAD[:4000])
    server.drip = (1, 0.02)  # 50 B/s, never quiet long enough for the socket timeout
    started = time.monotonic()
    with pytest.raises(dl.DownloadError, match=r"is too slow: \d+ bytes in the last 0\.\d s \(\d+ B/s, below the "
                                               r"minimum of 1000 B/s\); nothing was saved.*GLIDE_JAX_DOWNLOAD_MIN_RATE"):
        dl.fetch(dl.RemoteFile(server.url + "/base.pt"), tmp_path, progress=False, min_rate=1000, rate_window=0.5)
    assert time.monotonic() - started < 10
    assert _leftovers(tmp_path) == [] and not (tmp_path / "base.pt").exists()
    # the same transfer passes without a minimum, and a fast one passes the default minimum
    server.add("/small.pt", PAYLOAD[:20])
    assert dl.fetch(dl.RemoteFile(server.url + "/small.pt"), tmp_path, progress=False, min_rate=0,
                    rate_window=0.1).read_bytes() == PAYLOAD[:20]


def test_the_minimum_rate_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(dl.MIN_RATE_ENV, raising=False)
    assert dl.configured_min_rate() == dl.DEFAULT_MIN_RATE == 10_000
    monkeypatch.setenv(dl.MIN_RATE_ENV, "0")
    assert dl.configured_min_rate() == 0
    monkeypatch.setenv(dl.MIN_RATE_ENV, "fast")
    with pytest.raises(ValueError, match=r"GLIDE_JAX_DOWNLOAD_MIN_RATE must be a number of bytes per second >= 0"):
        dl.configured_min_rate()


_FETCH_IN_CHILD = """
import sys
from glide_jax.hub import download
download.fetch(download.RemoteFile(sys.argv[1]), sys.argv[2], progress=False)
"""


def test_sigterm_during_a_download_removes_its_part_file(server, tmp_path):
    import signal
    import subprocess
    import sys

    server.add("/upsample.pt", PAYLOAD[:2000])
    server.drip = (10, 0.05)  # 10 s for the whole body: long enough to be interrupted
    child = subprocess.Popen([sys.executable, "-c", _FETCH_IN_CHILD, server.url + "/upsample.pt", str(tmp_path)],
                             cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 60
        while not _leftovers(tmp_path) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert _leftovers(tmp_path), "the child never started writing"
        time.sleep(0.2)  # some bytes in
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM  # it still ends by the signal
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _leftovers(tmp_path) == [] and not (tmp_path / "upsample.pt").exists()


def test_part_files_of_dead_processes_are_removed_and_those_of_live_ones_kept(server, tmp_path):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"base.pt.{dead}.{'a' * 32}.part"
        live = tmp_path / f"base.pt.{alive.pid}.{'b' * 32}.part"
        other = tmp_path / f"upsample.pt.{dead}.{'c' * 32}.part"  # another file's: not this download's business
        for part in (stale, live, other):
            part.write_bytes(b"x" * 100)
        server.add("/base.pt", PAYLOAD[:1000])
        path = dl.fetch(dl.RemoteFile(server.url + "/base.pt"), tmp_path, progress=False)
        assert path.read_bytes() == PAYLOAD[:1000]
        assert _leftovers(tmp_path) == sorted([live.name, other.name])
    finally:
        alive.kill()
        alive.wait()
