"""Loading models for sampling by name: embedded models, released OpenAI checkpoints, model directories,
training workdirs.

A model directory (``tools.convert_checkpoint`` output or a training workdir)
may carry its own sentencepiece tokenizer (``tokenizer.model``); otherwise the
GLIDE BPE tokenizer is used for diffusion models and CLIP's BPE for CLIP. A
``sampling.json`` there (``{"sampler", "steps", "temperature", "guidance_scale"}``)
sets the model's recommended sampling, used when callers ask for the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

from glide_jax.config import ClipConfig
from glide_jax.sampling.pipeline import LoadedModel, Pipeline, read_sampling


def tokenizer_for(config, directory: Optional[Path] = None, vocab_dir=None):
    from glide_jax.tokenizers.files import get_tokenizer

    if directory is not None and (Path(directory) / "tokenizer.model").exists():
        return get_tokenizer("sentencepiece", Path(directory) / "tokenizer.model")
    return get_tokenizer("clip" if isinstance(config, ClipConfig) else "glide-bpe", vocab_dir)


def trained_relations(directory: Optional[Path]) -> Optional[Tuple[str, ...]]:
    """The shapes relations a model was trained on, from an exported model's ``training.json`` or a
    workdir's ``experiment.json`` (``data.relations``); None when neither records them."""
    if directory is None:
        return None
    for name in ("training.json", "experiment.json"):
        path = Path(directory) / name
        if path.exists():
            relations = json.loads(path.read_text()).get("data", {}).get("relations")
            return tuple(relations) if relations else None
    return None


def load(name_or_path: str, cache_dir=None, vocab_dir=None) -> LoadedModel:
    """Load one model: an embedded name (``embedded-base``, ...), a released name (``base``,
    ``upsample``, ``base-inpaint``, ...), or a directory."""
    from glide_jax.hub import embedded
    from glide_jax.hub.model_dir import converted_dir, load_model

    config, params = load_model(name_or_path, cache_dir)
    path = Path(name_or_path)
    if embedded.is_embedded(name_or_path):
        directory = embedded.embedded_dir(name_or_path)
    else:
        directory = path if path.exists() else converted_dir(name_or_path, cache_dir)
    exists = directory is not None and directory.exists()
    sampling, guidance = read_sampling(directory) if exists else (None, None)
    return LoadedModel(config, params, tokenizer_for(config, directory, vocab_dir), sampling, guidance,
                       trained_relations(directory) if exists else None)


def load_pipeline(base: str = "embedded-base", upsampler: Optional[str] = "embedded-upsample",
                  clip: Optional[str] = None, cache_dir=None, vocab_dir=None) -> Pipeline:
    """A ``Pipeline`` from model names or directories (``upsampler=None`` for base-size samples).

    The defaults are the package's embedded shapes models (offline); GLIDE's released
    weights are ``load_pipeline("base", "upsample", "clip")`` after ``glide-jax download``.
    """
    return Pipeline(
        load(base, cache_dir, vocab_dir),
        load(upsampler, cache_dir, vocab_dir) if upsampler else None,
        load(clip, cache_dir, vocab_dir) if clip else None,
    )
