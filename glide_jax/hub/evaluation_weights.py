"""The networks FID and CLIP score are measured with, as downloads: where they are and how a copy is checked.

``inception``
    pytorch-fid's FID Inception weights, ``pt_inception-2015-12-05-6726825d.pth``, from the
    pytorch-fid release that its own ``FID_WEIGHTS_URL`` names. The file name ends with the
    first 8 hex digits of the file's SHA-256 (torch.hub's convention), which the download must
    match. Its structure is then checked without reading the weights: the state dict (zip or
    legacy torch format, nothing in it executed) must hold exactly the tensors
    :mod:`glide_jax.hub.convert_inception` converts, at their shapes and in floating point, plus
    only what the conversion drops (the 1008-way classifier, batch-norm counters); a zip-format
    copy is read through its CRCs.

``clip-vit-b32``, ``clip-vit-b16``, ``clip-vit-l14``
    OpenAI's CLIP ViT-B/32, ViT-B/16 and ViT-L/14 as Hugging Face publishes them
    (``openai/clip-vit-base-patch32`` ...), into a folder ``load_hf_clip`` and
    ``ClipScorer.from_directory`` read. No digests are published beside them, so each file is
    checked by structure, ``config.json`` first because the others are checked against it:
    the config must describe a CLIP with the model's pinned parameter count
    (:data:`HF_CLIP_MODELS`); the weights' names, shapes and floating dtypes must be exactly
    the ones :mod:`glide_jax.hub.convert_hf_clip` converts for that config (the ``position_ids``
    buffers allowed), adding up to the same count, and a ``model.safetensors`` must be its
    header plus exactly those tensors, byte for byte (a ``pytorch_model.bin``, fetched only
    where the repository has no ``model.safetensors``, is read through its CRCs instead);
    ``vocab.json`` must map the config's vocabulary size of tokens to distinct ids;
    ``merges.txt`` must hold the merges CLIP uses; the other JSON files must be JSON objects.

Files come from ``$HF_ENDPOINT`` (as the Hugging Face libraries read it: a mirror, or a
local server in tests) or ``https://huggingface.co``, at :data:`HF_REVISION`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from glide_jax.errors import InputError
from glide_jax.hub import convert_inception
from glide_jax.hub.checkpoint_zip import MiB, CheckpointFormatError
from glide_jax.hub.convert_hf_clip import CONFIG_FILE, IGNORED_KEYS, SAFETENSORS_FILE, TORCH_FILE, hf_shapes
from glide_jax.hub.key_report import first_few
from glide_jax.hub.remote_file import RemoteFile, digest_prefix_in_name
from glide_jax.hub.safetensors import DTYPES, read_safetensors_header
from glide_jax.hub.torch_zip import checkpoint_format, read_manifest
from glide_jax.hub.verify import check_zip_crcs
from glide_jax.models.clip_vit import ClipVitConfig
from glide_jax.models.inception import FEATURES
from glide_jax.regular_files import check_regular_file
from glide_jax.tokenizers.byte_bpe import parse_merges
from glide_jax.tokenizers.clip_bpe import CLIP_MERGES
from glide_jax.tokenizers.hf_clip import MERGES_FILE, VOCAB_FILE, read_vocab

INCEPTION = "inception"
INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_CLASSES = 1008  # the classifier the file carries and FID never uses
_BATCH_NORM_COUNTER = ".num_batches_tracked"

HF_ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
HF_REVISION = "main"
MAX_JSON_BYTES = 4 * MiB  # config and tokenizer JSON files are a few KB (vocab.json is read by its own reader)


@dataclass(frozen=True)
class HFClipModel:
    """A Hugging Face CLIP repository and the parameter count of its model (without buffers)."""

    repo: str
    parameters: int


# Download name -> repository; the counts are those of Hugging Face's CLIPModel for each config.
HF_CLIP_MODELS: Dict[str, HFClipModel] = {
    "clip-vit-b32": HFClipModel("openai/clip-vit-base-patch32", 151_277_313),
    "clip-vit-b16": HFClipModel("openai/clip-vit-base-patch16", 149_620_737),
    "clip-vit-l14": HFClipModel("openai/clip-vit-large-patch14", 427_616_513),
}
# Fetched in this order: the config first (the other checks read it), the weights last (the largest).
HF_CLIP_FILES = (CONFIG_FILE, VOCAB_FILE, MERGES_FILE, "preprocessor_config.json", "tokenizer_config.json",
                 "special_tokens_map.json")
HF_WEIGHT_FILES = (SAFETENSORS_FILE, TORCH_FILE)  # the first one the repository has


def evaluation_names():
    """Download names of the evaluation networks."""
    return [INCEPTION, *HF_CLIP_MODELS]


# ----------------------------------------------------------------------------- FID Inception


def inception_remote(url: Optional[str] = None) -> RemoteFile:
    """The Inception weights at ``url`` (default :data:`INCEPTION_URL`), whose name carries their SHA-256's prefix."""
    url = INCEPTION_URL if url is None else url
    return RemoteFile(url, sha256_prefix=digest_prefix_in_name(url.rstrip("/").rsplit("/", 1)[-1]),
                      check=verify_inception)


def inception_torch_shapes() -> Dict[str, Tuple[int, ...]]:
    """torch key -> shape of every tensor the FID Inception's state dict must hold."""
    return convert_inception.torch_shapes()


def verify_inception(path) -> None:
    """Raise :class:`CheckpointFormatError` unless ``path`` is a readable FID Inception state dict."""
    path = check_regular_file(path, "Inception weights")
    zipped = checkpoint_format(path) == "zip"
    manifest = read_manifest(path)  # every tensor within its storage; nothing decompressed or executed
    droppable = {"fc.weight": (INCEPTION_CLASSES, FEATURES), "fc.bias": (INCEPTION_CLASSES,)}
    expected = inception_torch_shapes()
    unexpected = [k for k in manifest if k not in expected and k not in droppable
                  and not k.endswith(_BATCH_NORM_COUNTER)]
    problems = _layout_problems(manifest, expected, droppable, unexpected)
    if problems:
        raise CheckpointFormatError(f"{path} is not pytorch-fid's FID Inception state dict ({'; '.join(problems)})")
    if zipped:
        check_zip_crcs(path)


def _layout_problems(manifest: Mapping[str, Tuple[Tuple[int, ...], np.dtype]], expected: Mapping[str, tuple],
                     optional: Mapping[str, tuple], unexpected) -> list:
    """One line per kind of difference between a file's tensors and the layout it must have."""
    missing = [k for k in expected if k not in manifest]
    shapes = {**optional, **expected}
    misshaped = [k for k, (shape, _) in manifest.items() if k in shapes and tuple(shape) != tuple(shapes[k])]
    not_float = [k for k, (_, dtype) in manifest.items() if k in expected and not np.issubdtype(dtype, np.floating)]
    return [f"{what}: {first_few(keys)}" for what, keys in
            (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped),
             ("not floating point", not_float)) if keys]


# ----------------------------------------------------------------------------- Hugging Face CLIP


def hf_endpoint() -> str:
    """``$HF_ENDPOINT`` without a trailing slash, or Hugging Face's own address."""
    return (os.environ.get(HF_ENDPOINT_ENV, "").strip() or DEFAULT_HF_ENDPOINT).rstrip("/")


def hf_clip_model(name: str) -> HFClipModel:
    if name not in HF_CLIP_MODELS:
        raise InputError(f"no CLIP download is called {name!r}; known: {', '.join(HF_CLIP_MODELS)}")
    return HF_CLIP_MODELS[name]


def hf_clip_remote(name: str, filename: str, folder) -> RemoteFile:
    """``filename`` of the CLIP download ``name``, checked as it must be once in ``folder``."""
    model = hf_clip_model(name)
    config_path = Path(folder) / CONFIG_FILE
    if filename == CONFIG_FILE:
        check = functools.partial(verify_hf_clip_config, parameters=model.parameters, repo=model.repo)
    elif filename in HF_WEIGHT_FILES:
        check = functools.partial(verify_hf_clip_weights, config_path=config_path, parameters=model.parameters,
                                  file_format="torch" if filename == TORCH_FILE else "safetensors")
    elif filename == VOCAB_FILE:
        check = functools.partial(verify_vocab, config_path=config_path)
    elif filename == MERGES_FILE:
        check = verify_merges
    elif filename in HF_CLIP_FILES:
        check = verify_json_object
    else:
        raise InputError(f"{filename!r} is not one of the files a CLIP download fetches")
    return RemoteFile(f"{hf_endpoint()}/{model.repo}/resolve/{HF_REVISION}/{filename}", check=check)


def _json(path) -> object:
    path = check_regular_file(path, "JSON file")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{path}: {size} bytes is too large for a model's JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def verify_json_object(path) -> None:
    if not isinstance(_json(path), dict):
        raise InputError(f"{path}: not a JSON object")


def read_config(path) -> ClipVitConfig:
    """The :class:`ClipVitConfig` a Hugging Face ``config.json`` at ``path`` describes."""
    data = _json(path)
    try:
        return ClipVitConfig.from_hf_dict(data)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {e}") from None


@functools.lru_cache(maxsize=8)
def _hf_shapes(config: ClipVitConfig) -> Dict[str, Tuple[int, ...]]:
    """:func:`hf_shapes`, once per config (each file of a download is checked against the same one)."""
    return hf_shapes(config)


def _count(shapes: Mapping[str, Tuple[int, ...]]) -> int:
    return sum(int(np.prod(shape)) for shape in shapes.values())


def verify_hf_clip_config(path, parameters: int, repo: str) -> None:
    """The config must describe a CLIP with ``parameters`` parameters (those of ``repo``'s model)."""
    count = _count(_hf_shapes(read_config(path)))
    if count != parameters:
        raise InputError(f"{path} describes a CLIP of {count:,} parameters; {repo} has {parameters:,}")


def _weights_manifest(path: Path, file_format: str) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of a safetensors or torch file, every tensor checked against the file."""
    if file_format == "torch":
        manifest = read_manifest(path)
        if checkpoint_format(path) == "zip":
            check_zip_crcs(path)
        return manifest
    entries, _ = read_safetensors_header(path)  # the spans must tile the file exactly: its size is checked
    return {name: (entry.shape, DTYPES[entry.dtype]) for name, entry in entries.items()}


def verify_hf_clip_weights(path, config_path, parameters: int, file_format: str = "safetensors") -> None:
    """The weights (``file_format`` ``"safetensors"`` or ``"torch"``) must be exactly those ``config_path``'s
    config converts, ``parameters`` in all."""
    path = check_regular_file(path, "CLIP weights")
    expected = _hf_shapes(read_config(config_path))
    manifest = _weights_manifest(path, file_format)
    unexpected = [k for k in manifest if k not in expected and k not in IGNORED_KEYS]
    problems = _layout_problems(manifest, expected, {}, unexpected)
    if problems:
        raise CheckpointFormatError(f"{path} does not hold the weights of the CLIP {config_path} describes "
                                    f"({'; '.join(problems)})")
    count = _count({k: shape for k, (shape, _) in manifest.items() if k in expected})
    if count != parameters:
        raise CheckpointFormatError(f"{path} holds {count:,} parameters; the model has {parameters:,}")


def verify_vocab(path, config_path) -> None:
    """``vocab.json`` must map as many tokens to distinct ids as the config's text vocabulary has."""
    size = read_config(config_path).text.vocab_size
    vocab = read_vocab(check_regular_file(path, "vocabulary"))
    if len(vocab) != size:
        raise InputError(f"{path} holds {len(vocab)} tokens; the model's vocabulary has {size}")


def verify_merges(path) -> None:
    """``merges.txt`` must hold at least the merges CLIP uses, each a ``left right`` pair."""
    path = check_regular_file(path, "merges")
    if path.stat().st_size > 16 * MiB:
        raise InputError(f"{path}: {path.stat().st_size} bytes is too large for a merges file")
    try:
        merges = parse_merges(path.read_text(encoding="utf-8"), limit=CLIP_MERGES)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    if len(merges) < CLIP_MERGES or any(len(pair) != 2 for pair in merges):
        raise InputError(f"{path}: CLIP needs {CLIP_MERGES} 'left right' merges, the file has "
                         f"{sum(len(pair) == 2 for pair in merges)} such lines among its first {len(merges)}")
