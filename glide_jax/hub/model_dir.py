"""Saving and loading a model for sampling: Orbax parameters with their config beside them.

A model directory holds ``config.json`` (a tagged ``ModelConfig``/``ClipConfig``)
and ``params/`` (an Orbax checkpoint of the float32 parameter tree). Writes go to
a temporary sibling and are renamed into place, and an existing directory is
never replaced unless asked, so nothing already saved is lost.

``load_model`` accepts a model directory, a training workdir (its latest EMA
weights), an embedded model name (``embedded-base``, ...; see
:mod:`glide_jax.hub.embedded`), or a released checkpoint name (``base``,
``upsample``, ...), which is looked up in the cache, converted from the
downloaded ``.pt`` on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

import jax
import numpy as np
from flax.core import meta

from glide_jax.config import ClipConfig, ModelConfig, config_from_dict, config_to_dict, get_preset

Config = Union[ModelConfig, ClipConfig]
RELEASED = ("base", "upsample", "base-inpaint", "upsample-inpaint", "clip")


@contextlib.contextmanager
def atomic_directory(directory, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``directory`` to fill; when the block succeeds it
    takes ``directory``'s place in one rename (the old folder is removed only after that).

    Refuses an existing ``directory`` unless ``overwrite``; on failure nothing is left behind.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; use overwrite=True (CLI: --overwrite) to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(directory, params, config: Config, *, overwrite: bool = False) -> Path:
    """Write ``params`` and ``config`` to ``directory`` atomically."""
    import orbax.checkpoint as ocp

    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), meta.unbox(params))
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "params", params)
            ckptr.wait_until_finished()
        (tmp / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    return Path(directory).absolute()


def read_config(directory) -> Config:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a glide_jax model directory (no config.json)")
    return config_from_dict(json.loads(path.read_text()))


def load_params(directory) -> Any:
    import orbax.checkpoint as ocp

    path = Path(directory).absolute() / "params"
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no params/ checkpoint")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path)


def converted_dir(name: str, cache_dir=None) -> Path:
    from glide_jax.hub.download import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "converted" / name


def load_model(name_or_path: str, cache_dir=None) -> Tuple[Config, Any]:
    """``(config, params)`` from a model directory, a training workdir or a released checkpoint name."""
    from glide_jax.hub import embedded

    if embedded.is_embedded(name_or_path):
        return embedded.load_embedded(name_or_path)
    path = Path(name_or_path)
    if path.exists():
        if (path / "config.json").exists():
            if not (path / "params").exists() and (path / embedded.PARAMS_FILE).exists():
                return embedded.load_embedded_dir(path)
            return read_config(path), load_params(path)
        from glide_jax.train.checkpointing import load_for_sampling

        return load_for_sampling(path)
    if name_or_path in RELEASED:
        target = converted_dir(name_or_path, cache_dir)
        if not target.exists():
            convert_released(name_or_path, cache_dir=cache_dir)
        return read_config(target), load_params(target)
    raise FileNotFoundError(
        f"no model at {name_or_path!r}: give a model directory, a training workdir, one of the released "
        f"{', '.join(RELEASED)} or one of the embedded {', '.join(embedded.NAMES)}"
    )


def released_pt_path(name: str, cache_dir=None) -> Path:
    from glide_jax.hub.download import CHECKPOINTS, default_cache_dir

    return Path(cache_dir or default_cache_dir()) / CHECKPOINTS[name].filename


def convert_released(name: str, cache_dir=None, pt_paths: Optional[dict] = None) -> Path:
    """Convert a downloaded OpenAI checkpoint into a model directory in the cache."""
    from glide_jax.hub.convert import convert_pt

    if name == "clip":
        paths = pt_paths or {"image": released_pt_path("clip/image-enc", cache_dir),
                             "text": released_pt_path("clip/text-enc", cache_dir)}
    else:
        paths = pt_paths or {"model": released_pt_path(name, cache_dir)}
    missing = [str(p) for p in paths.values() if not Path(p).exists()]
    if missing:
        names = "clip/image-enc clip/text-enc" if name == "clip" else name
        raise FileNotFoundError(
            f"checkpoint {name!r} is not downloaded (looked for {', '.join(missing)}); "
            f"run `glide-jax download {names}` first"
        )
    config, params = convert_pt(get_preset(name), paths)
    return save_model(converted_dir(name, cache_dir), params, config, overwrite=True)
