"""Where glide_jax keeps what it downloads or converts: one folder, named by the environment.

Both the checkpoint hub (released ``.pt`` files and their converted model
directories) and the tokenizers (BPE vocabularies) read files from it, so it
lives below both of them.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GLIDE_JAX_CACHE"


def default_cache_dir() -> Path:
    """``$GLIDE_JAX_CACHE`` if set, else ``~/.cache/glide_jax``; read on every call, so a change of the
    environment variable takes effect at once."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "glide_jax"
