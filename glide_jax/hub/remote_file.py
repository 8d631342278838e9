"""What a download promises: a URL and the checks its bytes must pass before they take their final name.

A :class:`RemoteFile` is plain data, shared by the downloader (:mod:`glide_jax.hub.download`) and
the catalogues of what can be downloaded, so a catalogue never needs the transfer machinery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from glide_jax.errors import InputError

# torch.hub's convention: ``name-<first hex digits of the SHA-256>.ext``, e.g. pt_inception-2015-12-05-6726825d.pth
_DIGEST_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file; it is cached under the last component of its URL.

    ``sha256`` pins the whole digest, ``sha256_prefix`` its first hex digits (what a torch.hub file
    name carries), ``checkpoint`` names a released GLIDE checkpoint whose structure the file must
    have, and ``check`` is any further check of the downloaded file (raising ``InputError`` or
    ``OSError`` when the file is not what was promised).
    """

    url: str
    sha256: Optional[str] = None
    checkpoint: Optional[str] = None  # released checkpoint name whose structure the file must have
    sha256_prefix: Optional[str] = None
    check: Optional[Callable[[Path], None]] = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def digest_prefix_in_name(filename: str) -> str:
    """The SHA-256 prefix a torch.hub-style file name ends with (``...-6726825d.pth`` -> ``6726825d``)."""
    found = _DIGEST_IN_NAME.search(filename)
    if found is None:
        raise InputError(f"{filename!r} does not end in '-<hex digits of its SHA-256>.<extension>'")
    return found.group(1)
