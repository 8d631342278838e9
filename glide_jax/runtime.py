"""Process-wide JAX settings glide_jax applies: XLA CPU flags at import, and a persistent compilation cache.

XLA CPU flags. jax 0.10's CPU backend hands convolutions (and the
convolution+bias fusions around them) to its YNNPACK library. Profiling the
full-size ``base`` forward on this project's 2-core AVX-512 machine showed
convolution taking two thirds of a sampling step at about 190 GFLOP/s, while
XLA's older Eigen convolution runs the same shapes at 280-310 GFLOP/s
(64x64x192 3x3: 202 vs 310; 32x32x384: 237 vs 291; the tiny models' 32x32x32
training shapes: 126 vs 178). Excluding the two fusion kinds from YNNPACK
brings the base CFG step from about 2.8 s to 2.2 s and the embedded model's
training step from 1.45 s to 1.03 s.

XLA reads ``XLA_FLAGS`` once, when the first computation initialises the
backend, so the flags are added to the environment at import time. They only
name CPU options (accelerators ignore them). XLA aborts the process on a flag it
does not know, so they are only added for the jaxlib releases they were
measured on (``FLAG_JAXLIB``). A flag the user already set for the same option
wins, and ``GLIDE_JAX_XLA_DEFAULTS=0`` turns the defaults off.

Persistent compilation cache. A new process otherwise compiles every program
again: the sampling loops, the text encoders, the training step. The
command-line tool (and the web demo it serves), the training entry points
(``experiments/``) and the notebooks call :func:`enable_compilation_cache`,
which stores compiled programs in ``$GLIDE_JAX_CACHE/xla`` (by default
``~/.cache/glide_jax/xla``), so the next process loads them instead.
``GLIDE_JAX_COMPILATION_CACHE=DIR`` moves the cache, ``=0`` (or ``off``)
turns it off; a cache folder configured through JAX itself
(``JAX_COMPILATION_CACHE_DIR``) is left as it is. Every program is stored,
also the small ones (JAX's default keeps only those that took a second or
more): ``glide-jax generate`` on the embedded models compiles 37 programs, 33
of them in under 0.5 s each but 1.6-2.3 s together, and loads all 37 in
0.6 s (1.1 MB on disk). The least recently used entries are deleted beyond
``CACHE_MAX_BYTES``. Processes may share the folder: with a size limit JAX
reads and writes entries under a file lock (the ``filelock`` package), so none
reads a half-written entry. Importing ``glide_jax`` does not turn the cache
on, so a library user's own programs are not stored in glide_jax's folder
unless they call :func:`enable_compilation_cache`; programs with host
callbacks are never stored (a JAX rule).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Dict, Mapping, Optional

from glide_jax.cache import default_cache_dir

CPU_FLAGS: Dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution,-dot",
}
FLAG_JAXLIB = ("0.10.",)  # jaxlib versions (prefixes) whose XLA knows CPU_FLAGS
DISABLE_ENV = "GLIDE_JAX_XLA_DEFAULTS"

COMPILATION_CACHE_ENV = "GLIDE_JAX_COMPILATION_CACHE"
CACHE_MAX_BYTES = 2 * 1024**3
CACHE_MIN_COMPILE_SECONDS = 0.0
_OFF = ("0", "false", "no", "off")


def jaxlib_knows_flags() -> bool:
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    return version.startswith(FLAG_JAXLIB)


def merged_xla_flags(current: Optional[str], defaults: Dict[str, str] = CPU_FLAGS) -> str:
    """``current`` XLA_FLAGS plus every default whose option it does not already set."""
    flags = (current or "").split()
    named = {f.lstrip("-").split("=", 1)[0] for f in flags}
    flags += [f"--{name}={value}" for name, value in defaults.items() if name not in named]
    return " ".join(flags)


def apply_cpu_defaults(environ=os.environ) -> bool:
    """Add :data:`CPU_FLAGS` to ``environ["XLA_FLAGS"]``; returns whether anything was added.

    Has no effect on a backend that is already initialised (XLA parsed its flags then).
    """
    if environ.get(DISABLE_ENV, "1").strip().lower() in _OFF:
        return False
    if not jaxlib_knows_flags():
        return False
    current = environ.get("XLA_FLAGS", "")
    merged = merged_xla_flags(current)
    if merged == " ".join(current.split()):
        return False
    environ["XLA_FLAGS"] = merged
    return True


def compilation_cache_dir(environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """The persistent compilation cache's folder that ``environ`` asks for, or None when it turns the cache off."""
    value = environ.get(COMPILATION_CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    return default_cache_dir() / "xla"


def enable_compilation_cache(environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Turn on JAX's persistent compilation cache in :func:`compilation_cache_dir`; returns the folder in use.

    Returns None, changing nothing, when the environment turns the cache off or
    the folder cannot be created (with a warning naming it); returns JAX's own
    folder, unchanged, when one is configured through JAX. Call it before the
    first compilation whose program should be stored; calling it again is
    harmless (JAX opens its cache once, at the first compilation after a
    folder is set).
    """
    import jax  # deferred: this module runs on `import glide_jax`, which stays cheap

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    folder = compilation_cache_dir(environ)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compilation cache folder {folder} cannot be created ({e}); compiling without it "
                      f"(set {COMPILATION_CACHE_ENV} to another folder, or to 0)")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    if importlib.util.find_spec("filelock") is not None:  # JAX needs it for the size limit (and its locking)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return folder
