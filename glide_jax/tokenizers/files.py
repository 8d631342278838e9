"""Finding and reading tokenizer vocabulary files.

The vocabulary files are not part of the package. They are looked up in a directory the
caller names, or else in the download cache (``$GLIDE_JAX_CACHE``, default
``~/.cache/glide_jax``) that ``glide-jax download tokenizers`` fills. Each file may be
stored gzip-compressed (``encoder.json.gz``, as published) or plain (``encoder.json``).
When a file is missing the error says where it was looked for and how to fetch it.

Nothing here touches the disk or the network at import time; files are read only when a
tokenizer is built, and downloads happen only through :mod:`glide_jax.hub.download`.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import List, Optional, Union

from glide_jax.cache import CACHE_ENV, default_cache_dir
from glide_jax.regular_files import is_present, read_regular_bytes

PathLike = Union[str, os.PathLike]

GLIDE_BPE_FILES = ("encoder.json.gz", "vocab.bpe.gz")
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"

_GZIP_MAGIC = b"\x1f\x8b"


def _name_variants(filename: str) -> List[str]:
    """The compressed and the plain spelling of a vocabulary file name, given name first."""
    if filename.endswith(".gz"):
        return [filename, filename[: -len(".gz")]]
    return [filename, filename + ".gz"]


def find_vocab_file(filename: str, directory: Optional[PathLike] = None) -> Path:
    """Path of vocabulary ``filename`` (plain or ``.gz``) in ``directory``, else in the cache.

    Raises FileNotFoundError naming every path tried and how to download the files.
    """
    folder = Path(directory).expanduser() if directory is not None else default_cache_dir()
    candidates = [folder / name for name in _name_variants(filename)]
    for candidate in candidates:
        if is_present(candidate, "tokenizer vocabulary"):  # a device or pipe under that name is refused
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    where = (
        f"the directory given ({folder})"
        if directory is not None
        else f"the tokenizer cache {folder} (set ${CACHE_ENV} to use another directory)"
    )
    raise FileNotFoundError(
        f"tokenizer vocabulary {filename!r} not found in {where}; looked for {tried}. "
        "Fetch the vocabularies with `glide-jax download tokenizers` "
        "(in Python: glide_jax.hub.download.download('tokenizers')), which saves them "
        f"into {default_cache_dir()}."
    )


def read_vocab_text(path: PathLike) -> str:
    """UTF-8 text of a vocabulary file, decompressing it if it is gzip data."""
    raw = read_regular_bytes(path, "tokenizer vocabulary")
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")
