"""Fetch GLIDE's released checkpoints and tokenizer vocabularies into a local cache.

Neither the PyTorch weights (hundreds of MB each) nor the BPE vocabularies ship with this
package. They are fetched on request only - ``glide-jax download NAME`` or
:func:`download` - and never at import time.

Every file that appears in the cache under its final name is complete: it is streamed into
a private temporary file in the same directory, checked against the server's
``Content-Length`` (and against a SHA-256 digest where one is pinned), flushed to disk and
only then moved into place with :func:`os.replace`. A short or corrupt transfer is deleted
and raises :class:`DownloadError`. A per-file lock (``<file>.lock``) makes concurrent
processes wait for one another instead of downloading the same file twice; a file that
is already cached is reused without any network access.

The cache directory is ``$GLIDE_JAX_CACHE`` if set, else ``~/.cache/glide_jax``; the
tokenizer loaders in :mod:`glide_jax.tokenizers.files` look in the same place. Only the
standard library (``urllib``) and ``tqdm`` are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Union

from tqdm.auto import tqdm

from glide_jax.cache import CACHE_ENV, default_cache_dir

TOKENIZERS = "tokenizers"  # name of the group holding the three vocabulary files


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file; it is cached under the last component of its URL."""

    url: str
    sha256: Optional[str] = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_CHECKPOINT_ROOT = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"

# The six public GLIDE (filtered) checkpoints released by OpenAI in December 2021.
CHECKPOINTS = {
    "base": RemoteFile(_CHECKPOINT_ROOT + "base.pt"),
    "upsample": RemoteFile(_CHECKPOINT_ROOT + "upsample.pt"),
    "base-inpaint": RemoteFile(_CHECKPOINT_ROOT + "base_inpaint.pt"),
    "upsample-inpaint": RemoteFile(_CHECKPOINT_ROOT + "upsample_inpaint.pt"),
    "clip/image-enc": RemoteFile(_CHECKPOINT_ROOT + "clip_image_enc.pt"),
    "clip/text-enc": RemoteFile(_CHECKPOINT_ROOT + "clip_text_enc.pt"),
}

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


def known_names() -> List[str]:
    """Names accepted by :func:`download`."""
    return [*CHECKPOINTS, TOKENIZERS]


def download(
    name: str, *, cache_dir: Union[str, os.PathLike, None] = None, progress: bool = True
) -> Path:
    """Make sure the files called ``name`` are in the cache and return where they are.

    ``name`` is a checkpoint (``"base"``, ``"upsample"``, ``"base-inpaint"``,
    ``"upsample-inpaint"``, ``"clip/image-enc"``, ``"clip/text-enc"``), for which the path
    of the ``.pt`` file is returned, or ``"tokenizers"``, for which the three vocabulary
    files are fetched and the directory holding them is returned. ``cache_dir`` overrides
    :func:`default_cache_dir`.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == TOKENIZERS:
        for remote in TOKENIZER_FILES.values():
            fetch(remote, directory, progress=progress)
        return directory
    if name in CHECKPOINTS:
        return fetch(CHECKPOINTS[name], directory, progress=progress)
    raise ValueError(f"unknown download name {name!r}; known names are: {', '.join(known_names())}")


def fetch(
    remote: RemoteFile,
    directory: Union[str, os.PathLike],
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``remote`` into ``directory`` unless it is already there; return its path."""
    dest = Path(directory) / remote.filename
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(dest.with_name(dest.name + ".lock")):
        if not dest.exists():  # another process may have finished it while we waited
            _download_atomically(remote, dest, progress=progress, timeout=timeout, chunk_size=chunk_size)
    return dest


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (released by the OS if the process dies).

    Without ``fcntl`` (Windows) no lock is taken; downloads stay atomic because each
    writer uses its own temporary file, at worst a file is fetched twice.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download_atomically(
    remote: RemoteFile, dest: Path, *, progress: bool, timeout: float, chunk_size: int
) -> None:
    # A name private to this writer; created with open() so the umask sets the permissions.
    tmp_name = dest.with_name(f"{dest.name}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp_name, "xb") as out:
            written, expected, digest = _stream(remote, out, progress, timeout, chunk_size)
            out.flush()
            os.fsync(out.fileno())
        _verify(remote, written, expected, digest)
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _stream(remote: RemoteFile, out: BinaryIO, progress: bool, timeout: float, chunk_size: int):
    """Copy the response body into ``out``; return (bytes written, Content-Length, sha256)."""
    digest = hashlib.sha256()
    written = 0
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response:
            expected = _content_length(response)
            with tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.filename,
                disable=not progress,
            ) as bar:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
        raise DownloadError(f"downloading {remote.url} failed: {err}") from err
    return written, expected, digest.hexdigest()


def _content_length(response) -> Optional[int]:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None else None


def _verify(remote: RemoteFile, written: int, expected: Optional[int], digest: str) -> None:
    if expected is not None and written != expected:
        raise DownloadError(
            f"downloading {remote.url}: received {written} bytes but the server announced "
            f"{expected}; the partial file was deleted, try again"
        )
    if remote.sha256 is not None and digest != remote.sha256:
        raise DownloadError(
            f"downloading {remote.url}: SHA-256 {digest} does not match the expected "
            f"{remote.sha256}; the file was deleted"
        )
