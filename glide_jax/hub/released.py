"""OpenAI's released GLIDE (filtered) checkpoints: names, their files in the cache, conversion.

A released name (``base``, ``upsample``, ``base-inpaint``, ``upsample-inpaint``,
``clip``) is downloaded as PyTorch ``.pt`` files (``glide-jax download``) and
converted on first use into a float32 model directory
(:mod:`glide_jax.hub.model_dir`) under ``<cache>/converted/<name>``; later loads
read that folder. A converted folder in the retired Orbax format is converted
again. A single ``.pt`` file of a released U-Net is recognised by the shape of
its first convolution (which says base, upsampler or either inpainting variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from glide_jax.cache import default_cache_dir
from glide_jax.config import get_preset
from glide_jax.errors import InputError
from glide_jax.hub import model_dir
from glide_jax.hub.convert import convert_pt, convert_state, read_state
from glide_jax.hub.download import CHECKPOINTS

# Released name -> the preset that builds its network.
RELEASED_PRESETS = {"base": "base", "upsample": "upsample", "base-inpaint": "base-inpaint",
                    "upsample-inpaint": "upsample-inpaint", "clip": "clip"}
RELEASED = tuple(RELEASED_PRESETS)
# Released name -> its downloads, by role in the conversion (a U-Net has one file, CLIP two).
DOWNLOADS = {"base": {"model": "base"}, "upsample": {"model": "upsample"},
             "base-inpaint": {"model": "base-inpaint"}, "upsample-inpaint": {"model": "upsample-inpaint"},
             "clip": {"image": "clip/image-enc", "text": "clip/text-enc"}}
CONVERTED = "converted"
FIRST_CONV = "input_blocks.0.0.weight"  # [channels, input channels, 3, 3]: tells the released U-Nets apart


def converted_dir(name: str, cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / CONVERTED / name


def downloaded_files(name: str, cache_dir=None) -> Dict[str, Path]:
    """Where the ``.pt`` files of a released name are (or will be) in the cache, by role."""
    if name not in DOWNLOADS:
        raise InputError(f"unknown released model {name!r}; known: {', '.join(RELEASED)}")
    root = Path(cache_dir or default_cache_dir())
    return {role: root / CHECKPOINTS[download].filename for role, download in DOWNLOADS[name].items()}


def convert_released(name: str, cache_dir=None) -> Path:
    """Convert a downloaded released checkpoint into its model directory in the cache (replacing it)."""
    paths = downloaded_files(name, cache_dir)
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {name!r} is not downloaded (looked for {', '.join(missing)}); "
            f"run `glide-jax download {' '.join(DOWNLOADS[name].values())}` first")
    try:
        config, params = convert_pt(get_preset(RELEASED_PRESETS[name]), paths)
    except ValueError as e:  # a damaged download or a file put there by hand (CheckpointFormatError, mismatch)
        files = " ".join(str(p) for p in paths.values())
        raise InputError(f"cannot convert {name!r}: {e}. Delete the downloaded file (rm {files}) and run "
                         f"`glide-jax download {' '.join(DOWNLOADS[name].values())}` again") from None
    card = {"source": f"OpenAI GLIDE (filtered) released checkpoint {name!r}",
            "converted_from": sorted(p.name for p in paths.values())}
    target = converted_dir(name, cache_dir)
    model_dir.save_model_dir(target, config, params, dtype="float32", card=card, overwrite=True)
    return target


def ensure_converted(name: str, cache_dir=None) -> Path:
    """The converted model directory of a released name, converting on first use (or from the old format)."""
    target = converted_dir(name, cache_dir)
    if not model_dir.is_model_dir(target):
        convert_released(name, cache_dir)
    return target


def identify_preset(state_dict: Mapping[str, Any], candidates: Optional[Sequence[str]] = None) -> str:
    """The released name whose U-Net has this state dict's first convolution (shape ``[C, C_in, 3, 3]``).

    ``candidates`` default to the released U-Nets; a state dict that fits none or
    several raises, naming the shapes it was compared with.
    """
    names = [n for n in RELEASED_PRESETS if DOWNLOADS[n].keys() == {"model"}] if candidates is None else candidates
    if FIRST_CONV not in state_dict:
        raise InputError(f"not a GLIDE U-Net checkpoint (no {FIRST_CONV!r}); a CLIP checkpoint comes as two files: "
                         "load the released name 'clip', or convert with tools/convert_checkpoint.py --preset clip")
    shape = tuple(np.shape(state_dict[FIRST_CONV]))
    expected = {name: _first_conv_shape(name) for name in names}
    matches = [name for name, want in expected.items() if want == shape]
    if len(matches) != 1:
        known = "; ".join(f"{name}: {list(want)}" for name, want in expected.items())
        raise InputError(f"cannot tell which model this checkpoint is: {FIRST_CONV} has shape {list(shape)}, "
                         f"{'several' if matches else 'none'} of the released U-Nets fit ({known}); "
                         "convert it with tools/convert_checkpoint.py --preset NAME or --reference-kwargs")
    return matches[0]


def _first_conv_shape(name: str) -> Tuple[int, ...]:
    unet = get_preset(RELEASED_PRESETS.get(name, name)).unet
    return (unet.num_channels, unet.model_in_channels, 3, 3)


def convert_checkpoint_file(path, preset: Optional[str] = None) -> Tuple[Any, Dict[str, Any], str]:
    """``(config, variables, name)`` of one released U-Net ``.pt`` file, converted in memory.

    ``preset`` names the released model (or any preset) it holds; without it the
    model is identified from the state dict (:func:`identify_preset`).
    """
    state = read_state(path)
    name = preset or identify_preset(state)
    config = get_preset(RELEASED_PRESETS.get(name, name))
    params = convert_state(config, {"model": state})
    return config, _float32(params), name


def _float32(tree):
    if isinstance(tree, Mapping):
        return {k: _float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)
