"""Fetch GLIDE's released checkpoints and tokenizer vocabularies into a local cache.

Neither the PyTorch weights (hundreds of MB each) nor the BPE vocabularies ship with this
package. They are fetched on request only - ``glide-jax download NAME`` or
:func:`download` - and never at import time.

Every file that appears in the cache under its final name is complete and verified: it is
streamed into a private temporary file in the same directory and checked against the
server's ``Content-Length`` and ``Content-MD5`` (when sent), against a pinned SHA-256 (the
vocabularies), and, for the checkpoints, whose digests OpenAI does not publish, against
their structure (:func:`glide_jax.hub.verify.verify_checkpoint`: zip CRCs, the released
keys, shapes and parameter count). The networks FID and CLIP score are measured with (``inception``,
``clip-vit-b32``, ``clip-vit-b16``, ``clip-vit-l14``) are checked as
:mod:`glide_jax.hub.evaluation_weights` describes: a SHA-256 prefix and the structure the
converters read. Only then is it moved into place with :func:`os.replace`,
beside a ``<file>.download.json`` record (URL, size, SHA-256, ETag). A web page sent instead
of the file, a short, damaged or unverifiable transfer is deleted and raises
:class:`DownloadError`, which says what to do; nothing is left under the final name. A
cached file whose size no longer matches its record is set aside (``<file>.damaged-<time>``)
and downloaded again. A per-file lock (``<file>.lock``) makes concurrent
processes wait for one another instead of downloading the same file twice; a file that
is already cached is reused without any network access.

An interrupted download leaves nothing behind: the temporary ``<file>.<pid>.<hex>.part``
is removed on any exception, on Ctrl-C and, in the main thread of a process that has not
set its own SIGTERM handler, on SIGTERM (the handler unwinds the download, then the
process ends by the signal as it would have). What a SIGKILL or a power cut leaves is
removed by the next download of the same file, under its lock, once the process named in
the part file's name no longer exists. A transfer slower than :data:`DEFAULT_MIN_RATE`
over a whole :data:`RATE_WINDOW_SECONDS` window (a server that drips bytes just often
enough to beat the socket timeout) fails with a :class:`DownloadError`; set
``$GLIDE_JAX_DOWNLOAD_MIN_RATE`` (bytes per second, 0 to wait forever) to change it.

The cache directory is ``$GLIDE_JAX_CACHE`` if set, else ``~/.cache/glide_jax``; the
tokenizer loaders in :mod:`glide_jax.tokenizers.files` look in the same place. Only the
standard library (``urllib``) and ``tqdm`` are used.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Sequence, Union

from tqdm.auto import tqdm

from glide_jax.cache import CACHE_ENV, default_cache_dir
from glide_jax.errors import InputError
from glide_jax.hub import evaluation_weights
from glide_jax.hub.checkpoint_zip import CheckpointFormatError
from glide_jax.hub.part_files import part_name, remove_stale_parts
from glide_jax.hub.remote_file import RemoteFile
from glide_jax.hub.verify import verify_checkpoint

TOKENIZERS = "tokenizers"  # name of the group holding the three vocabulary files
MIN_RATE_ENV = "GLIDE_JAX_DOWNLOAD_MIN_RATE"
DEFAULT_MIN_RATE = 10_000  # bytes per second: a modem-era floor, ~2 days for the largest checkpoint
RATE_WINDOW_SECONDS = 60.0  # the rate is judged over windows this long


_CHECKPOINT_ROOT = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"

# The six public GLIDE (filtered) checkpoints released by OpenAI in December 2021.
CHECKPOINTS = {
    name: RemoteFile(_CHECKPOINT_ROOT + filename, checkpoint=name)
    for name, filename in (("base", "base.pt"), ("upsample", "upsample.pt"), ("base-inpaint", "base_inpaint.pt"),
                           ("upsample-inpaint", "upsample_inpaint.pt"), ("clip/image-enc", "clip_image_enc.pt"),
                           ("clip/text-enc", "clip_text_enc.pt"))
}
RECORD_SUFFIX = ".download.json"  # beside each downloaded file: what was received and verified

_TOKENIZER_ROOT = "https://raw.githubusercontent.com/openai/glide-text2im/main/glide_text2im/tokenizer/"

# GPT-2 BPE (GLIDE text encoder) and CLIP BPE vocabularies, keyed by cache file name.
# The digests pin the files as published in openai/glide-text2im.
TOKENIZER_FILES = {
    "encoder.json.gz": RemoteFile(
        _TOKENIZER_ROOT + "encoder.json.gz",
        "4debc1cf25180021b07744bc9f4488d53c7bf112c8ce5de8097c6a7518f4ec7c",
    ),
    "vocab.bpe.gz": RemoteFile(
        _TOKENIZER_ROOT + "vocab.bpe.gz",
        "ce239dd5a898827423fee00e3f7ab37de7900f247f2ba360753d860e8a46524d",
    ),
    "bpe_simple_vocab_16e6.txt.gz": RemoteFile(
        _TOKENIZER_ROOT + "bpe_simple_vocab_16e6.txt.gz",
        "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
    ),
}


class DownloadError(OSError):
    """A transfer failed or produced a file that does not match what was promised."""

    status: Optional[int] = None  # the HTTP status, when the server refused the request


def known_names() -> List[str]:
    """Names accepted by :func:`download`."""
    return [*CHECKPOINTS, TOKENIZERS, *evaluation_weights.evaluation_names()]


def download(
    name: str, *, cache_dir: Union[str, os.PathLike, None] = None, progress: bool = True
) -> Path:
    """Make sure the files called ``name`` are in the cache and return where they are.

    ``name`` is a checkpoint (``"base"``, ``"upsample"``, ``"base-inpaint"``,
    ``"upsample-inpaint"``, ``"clip/image-enc"``, ``"clip/text-enc"``), for which the path
    of the ``.pt`` file is returned, or ``"tokenizers"``, for which the three vocabulary
    files are fetched and the directory holding them is returned. ``"inception"`` is
    pytorch-fid's FID Inception (the path of its ``.pth`` is returned); ``"clip-vit-b32"``,
    ``"clip-vit-b16"`` and ``"clip-vit-l14"`` are Hugging Face CLIP checkpoints, fetched into the
    folder ``<cache>/<name>`` that is returned. ``cache_dir`` overrides :func:`default_cache_dir`.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == TOKENIZERS:
        for remote in TOKENIZER_FILES.values():
            fetch(remote, directory, progress=progress)
        return directory
    if name in CHECKPOINTS:
        return fetch(CHECKPOINTS[name], directory, progress=progress)
    if name == evaluation_weights.INCEPTION:
        return fetch(evaluation_weights.inception_remote(), directory, progress=progress)
    if name in evaluation_weights.HF_CLIP_MODELS:
        return _download_hf_clip(name, directory / name, progress)
    raise InputError(f"unknown download name {name!r}; known names are: {', '.join(known_names())}")


def _download_hf_clip(name: str, folder: Path, progress: bool) -> Path:
    """The CLIP checkpoint ``name`` in ``folder``: its config first (the other files are checked against it)."""
    for filename in evaluation_weights.HF_CLIP_FILES:
        fetch(evaluation_weights.hf_clip_remote(name, filename, folder), folder, progress=progress)
    _fetch_first_available([evaluation_weights.hf_clip_remote(name, filename, folder)
                            for filename in evaluation_weights.HF_WEIGHT_FILES], folder, progress)
    return folder


def _fetch_first_available(remotes: Sequence[RemoteFile], folder: Path, progress: bool) -> Path:
    """The first of ``remotes`` already in ``folder``, else the first one the server has."""
    for remote in remotes:
        if (folder / remote.filename).exists():
            return fetch(remote, folder, progress=progress)
    for remote in remotes[:-1]:
        try:
            return fetch(remote, folder, progress=progress)
        except DownloadError as err:
            if err.status != HTTPStatus.NOT_FOUND:
                raise
    return fetch(remotes[-1], folder, progress=progress)


def fetch(
    remote: RemoteFile,
    directory: Union[str, os.PathLike],
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    min_rate: Optional[float] = None,
    rate_window: float = RATE_WINDOW_SECONDS,
) -> Path:
    """Download ``remote`` into ``directory`` unless it is already there intact; return its path.

    ``timeout`` bounds each wait for the server; ``min_rate`` (bytes per second, default
    ``$GLIDE_JAX_DOWNLOAD_MIN_RATE`` or :data:`DEFAULT_MIN_RATE`; 0 disables it) is the
    slowest transfer accepted, judged over every ``rate_window`` seconds.
    """
    min_rate = configured_min_rate() if min_rate is None else float(min_rate)
    if not min_rate >= 0 or not rate_window > 0:
        raise InputError(f"min_rate must be >= 0 and rate_window > 0, got {min_rate} and {rate_window}")
    dest = Path(directory) / remote.filename
    if dest.exists() and _still_intact(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    limits = _Limits(timeout, chunk_size, min_rate, rate_window)
    with _sigterm_unwinds(), _exclusive_lock(dest.with_name(dest.name + ".lock")):
        if not (dest.exists() and _still_intact(dest)):  # another process may have finished it while we waited
            remove_stale_parts(dest)
            _set_aside_if_present(dest)
            _download_atomically(remote, dest, progress=progress, limits=limits)
    return dest


def configured_min_rate() -> float:
    """``$GLIDE_JAX_DOWNLOAD_MIN_RATE`` (bytes per second) if set, else :data:`DEFAULT_MIN_RATE`."""
    text = os.environ.get(MIN_RATE_ENV, "").strip()
    if not text:
        return float(DEFAULT_MIN_RATE)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InputError(f"${MIN_RATE_ENV} must be a number of bytes per second >= 0 (0: no minimum), got {text!r}")
    return value


@dataclass(frozen=True)
class _Limits:
    timeout: float
    chunk_size: int
    min_rate: float
    rate_window: float


class _Terminated(BaseException):
    """SIGTERM arrived during a download; raised by the handler so that the partial file is removed."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM unwinds the download (removing its part file), then ends the process by
    SIGTERM as before. Only in the main thread, and only where SIGTERM has its default action: a program
    with its own handler (the training loop's preemption watch) keeps it."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def unwind(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise _Terminated()

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # the default action: the process ends with "killed by SIGTERM"
        raise SystemExit(128 + signal.SIGTERM) from None  # only if the signal is blocked in this thread
    finally:
        if signal.getsignal(signal.SIGTERM) is unwind:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _still_intact(dest: Path) -> bool:
    """False when the file's download record says it had another size (truncated or replaced since)."""
    record = dest.with_name(dest.name + RECORD_SUFFIX)
    try:
        expected = json.loads(record.read_text())["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # no usable record (placed by hand, or an older cache): trusted as it is
    return dest.stat().st_size == expected


def _set_aside_if_present(dest: Path) -> None:
    if dest.exists():
        aside = dest.with_name(f"{dest.name}.damaged-{int(time.time())}")
        os.replace(dest, aside)
        warnings.warn(f"{dest} no longer has the size it was downloaded with; moved it to {aside} "
                      "and downloading it again", stacklevel=3)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (released by the OS if the process dies).

    Without ``fcntl`` (Windows) no lock is taken; downloads stay atomic because each
    writer uses its own temporary file, at worst a file is fetched twice.
    """
    try:
        import fcntl  # deferred: POSIX only; without it no lock is taken
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download_atomically(remote: RemoteFile, dest: Path, *, progress: bool, limits: _Limits) -> None:
    # A name private to this writer; created with open() so the umask sets the permissions.
    tmp_name = part_name(dest)
    try:
        with open(tmp_name, "xb") as out:
            received = _stream(remote, out, progress, limits)
            out.flush()
            os.fsync(out.fileno())
        _verify(remote, received, tmp_name)
        os.replace(tmp_name, dest)
        record = {"url": remote.url, "bytes": received.written, "sha256": received.sha256,
                  "etag": received.etag, "content_md5": received.content_md5}
        dest.with_name(dest.name + RECORD_SUFFIX).write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@dataclass
class _Received:
    """What a transfer delivered and what the server said about it."""

    written: int
    announced: Optional[int]  # Content-Length
    sha256: str
    md5: str
    content_md5: Optional[str]  # the server's Content-MD5 header (base64), if sent
    content_type: str
    etag: Optional[str]


def _stream(remote: RemoteFile, out: BinaryIO, progress: bool, limits: _Limits) -> _Received:
    """Copy the response body into ``out`` and say what arrived."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    written = 0
    try:
        with urllib.request.urlopen(remote.url, timeout=limits.timeout) as response:
            # read1 returns whatever has arrived, so a slow transfer is judged while it drips
            read = getattr(response, "read1", response.read)
            pace = _Pace(remote, limits)
            headers = response.headers
            expected = _content_length(response)
            with tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.filename,
                disable=not progress,
            ) as bar:
                while chunk := read(limits.chunk_size):
                    out.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    pace.check(written)
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
        failure = DownloadError(f"downloading {remote.url} failed: {err}; nothing was saved, try again "
                                "(`glide-jax download` resumes from scratch)")
        failure.status = err.code if isinstance(err, urllib.error.HTTPError) else None
        raise failure from err
    return _Received(written, expected, sha256.hexdigest(), md5.hexdigest(), headers.get("Content-MD5"),
                     headers.get_content_type() if headers.get("Content-Type") else "", headers.get("ETag"))


class _Pace:
    """Fails a transfer that moves fewer than ``min_rate`` bytes per second over a whole window."""

    def __init__(self, remote: RemoteFile, limits: _Limits):
        self.remote, self.limits = remote, limits
        self.window_start, self.window_bytes = time.monotonic(), 0

    def check(self, written: int) -> None:
        now = time.monotonic()
        elapsed = now - self.window_start
        if not self.limits.min_rate or elapsed < self.limits.rate_window:
            return
        rate = (written - self.window_bytes) / elapsed
        if rate < self.limits.min_rate:
            raise DownloadError(
                f"downloading {self.remote.url} is too slow: {written - self.window_bytes} bytes in the last "
                f"{elapsed:.1f} s ({rate:.0f} B/s, below the minimum of {self.limits.min_rate:.0f} B/s); nothing "
                f"was saved. Try again later, or set ${MIN_RATE_ENV} to a lower rate (0: no minimum)")
        self.window_start, self.window_bytes = now, written


def _content_length(response) -> Optional[int]:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None else None


def _verify(remote: RemoteFile, received: _Received, path: Path) -> None:
    def fail(problem: str) -> DownloadError:
        return DownloadError(f"downloading {remote.url}: {problem}; the file was deleted and nothing was saved "
                             f"as {remote.filename}. Run the download again; if it keeps failing, the server may "
                             "be down or have moved the file")

    if received.content_type == "text/html":
        raise fail("the server sent a web page (text/html) instead of the file")
    if received.announced is not None and received.written != received.announced:
        raise fail(f"received {received.written} bytes but the server announced {received.announced}")
    if received.content_md5 is not None:
        try:
            announced_md5 = base64.b64decode(received.content_md5, validate=True).hex()
        except ValueError:
            announced_md5 = None
        if announced_md5 != received.md5:
            raise fail(f"the content's MD5 does not match the server's Content-MD5 {received.content_md5}")
    if remote.sha256 is not None and received.sha256 != remote.sha256:
        raise fail(f"SHA-256 {received.sha256} does not match the expected {remote.sha256}")
    if remote.sha256_prefix is not None and not received.sha256.startswith(remote.sha256_prefix):
        raise fail(f"SHA-256 {received.sha256} does not start with {remote.sha256_prefix}, as the file's name "
                   "promises")
    if remote.checkpoint is not None:
        try:
            verify_checkpoint(path, remote.checkpoint)
        except (CheckpointFormatError, OSError) as e:
            raise fail(f"the file is not an intact released {remote.checkpoint!r} checkpoint "
                       f"({str(e).replace(str(path), 'it')})") from None
    if remote.check is not None:
        try:
            remote.check(path)
        except (InputError, OSError) as e:
            raise fail(f"it is not a valid {remote.filename} ({str(e).replace(str(path), 'it')})") from None
