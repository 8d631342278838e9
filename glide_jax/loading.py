"""Loading models for sampling by name: released OpenAI checkpoints, model directories, training workdirs.

A model directory (``tools.convert_checkpoint`` output or a training workdir)
may carry its own sentencepiece tokenizer (``tokenizer.model``); otherwise the
GLIDE BPE tokenizer is used for diffusion models and CLIP's BPE for CLIP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from glide_jax.config import ClipConfig
from glide_jax.pipeline import LoadedModel, Pipeline


def tokenizer_for(config, directory: Optional[Path] = None, vocab_dir=None):
    from glide_jax.tokenizers.vocab import get_tokenizer

    if directory is not None and (Path(directory) / "tokenizer.model").exists():
        return get_tokenizer("sentencepiece", Path(directory) / "tokenizer.model")
    return get_tokenizer("clip" if isinstance(config, ClipConfig) else "glide-bpe", vocab_dir)


def load(name_or_path: str, cache_dir=None, vocab_dir=None) -> LoadedModel:
    """Load one model: a released name (``base``, ``upsample``, ``base-inpaint``, ...), or a directory."""
    from glide_jax.checkpoints.store import converted_dir, load_model

    config, params = load_model(name_or_path, cache_dir)
    path = Path(name_or_path)
    directory = path if path.exists() else converted_dir(name_or_path, cache_dir)
    return LoadedModel(config, params, tokenizer_for(config, directory, vocab_dir))


def load_pipeline(base: str = "base", upsampler: Optional[str] = "upsample", clip: Optional[str] = None,
                  cache_dir=None, vocab_dir=None) -> Pipeline:
    """A ``Pipeline`` from model names or directories (``upsampler=None`` for base-size samples)."""
    return Pipeline(
        load(base, cache_dir, vocab_dir),
        load(upsampler, cache_dir, vocab_dir) if upsampler else None,
        load(clip, cache_dir, vocab_dir) if clip else None,
    )
