"""Is a released checkpoint file what it claims to be? Checks run before a download takes its final name.

OpenAI publishes no digests for the six GLIDE checkpoints, so a downloaded
``.pt`` is verified by structure instead: it must be a readable zip whose
members all pass their CRC, whose pickle is a state dict (read by the
torch-free reader, so nothing in it runs), whose every tensor fits its
storage, and whose keys and shapes are exactly those of the released model
(from the package's own configs, the same tables the converter uses), adding
up to the parameter count pinned in :data:`RELEASED_PARAMETERS`. An HTML
error page, a short transfer or another model's file all fail here, with a
message naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple
import zipfile

import numpy as np

from glide_jax.config import get_preset
from glide_jax.errors import InputError
from glide_jax.hub.checkpoint_zip import CheckpointFormatError
from glide_jax.hub import convert_clip, convert_unet
from glide_jax.hub.torch_zip import read_manifest
from glide_jax.hub.key_report import first_few
from glide_jax.regular_files import check_regular_file

# Download name -> (tensor count, parameter count) of the released checkpoint, as OpenAI's code builds it.
RELEASED_PARAMETERS: Dict[str, Tuple[int, int]] = {
    "base": (783, 385_030_726),
    "upsample": (797, 398_361_286),
    "base-inpaint": (783, 385_037_638),
    "upsample-inpaint": (797, 398_368_198),
    "clip/image-enc": (188, 86_443_776),
    "clip/text-enc": (185, 71_679_488),
}
# Download name -> (preset, CLIP tower or None) whose layout the file must have.
_LAYOUTS = {"base": ("base", None), "upsample": ("upsample", None), "base-inpaint": ("base-inpaint", None),
            "upsample-inpaint": ("upsample-inpaint", None), "clip/image-enc": ("clip", "image"),
            "clip/text-enc": ("clip", "text")}


def expected_shapes(name: str) -> Dict[str, Tuple[int, ...]]:
    """PyTorch key -> shape of the released checkpoint called ``name`` (a download name)."""
    if name not in _LAYOUTS:
        raise InputError(f"no released checkpoint is called {name!r}; known: {', '.join(_LAYOUTS)}")
    preset, tower = _LAYOUTS[name]
    config = get_preset(preset)
    if tower is None:
        return convert_unet.torch_shapes(config.unet)

    return convert_clip.torch_shapes(config, tower)




def verify_checkpoint(path, name: str) -> None:
    """Raise :class:`CheckpointFormatError` unless ``path`` is a complete, intact copy of checkpoint ``name``."""
    path = check_regular_file(path, "checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path} is not a zip archive, as every released checkpoint is")
    manifest = read_manifest(path)  # zip structure, safe pickle, every tensor within its storage
    expected = expected_shapes(name)
    missing, unexpected = set(expected) - set(manifest), set(manifest) - set(expected)
    misshaped = [k for k in set(expected) & set(manifest) if tuple(manifest[k][0]) != tuple(expected[k])]
    not_float = [k for k, (_, dtype) in manifest.items() if not np.issubdtype(dtype, np.floating)]
    problems = [f"{what}: {first_few(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped),
                 ("not floating point", not_float)) if keys]
    if problems:
        raise CheckpointFormatError(f"{path} is not the released {name!r} checkpoint ({'; '.join(problems)})")
    tensors, parameters = RELEASED_PARAMETERS[name]
    count = sum(int(np.prod(shape)) for shape, _ in manifest.values())
    if (len(manifest), count) != (tensors, parameters):
        raise CheckpointFormatError(f"{path} holds {len(manifest)} tensors of {count:,} parameters; the released "
                                    f"{name!r} checkpoint has {tensors} of {parameters:,}")
    check_zip_crcs(path)


def check_zip_crcs(path) -> None:
    """Raise :class:`CheckpointFormatError` unless every member of the zip ``path`` passes its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every member through its CRC, one block at a time
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointFormatError(f"{path} cannot be read to the end ({e})") from None
    if damaged is not None:
        raise CheckpointFormatError(f"{path}: member {damaged!r} fails its CRC check (the file is damaged)")
