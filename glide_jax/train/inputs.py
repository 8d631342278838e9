"""From a ``DataConfig`` to the training iterator: source, tokenizer, per-host batches, preview inputs.

The source is the registered reader ``data.source`` names
(:mod:`glide_jax.data.sources`: the procedural captioned shapes, rendered on
demand, or a prepared TFDS folder).

A model trained from scratch gets a SentencePiece vocabulary learned from its
own training captions on the first run (``tokenizer.model`` in the workdir,
written atomically and reused by every resumed run and by the sampling
loaders). Tokenizers enter the grain pipeline as small picklable callables.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Union

import jax
import numpy as np

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.data import input_pipeline, sources
from glide_jax.data.masks import random_inpaint_mask
from glide_jax.errors import InputError
from glide_jax.family import family_of
from glide_jax.tokenizers import get_tokenizer
from glide_jax.tokenizers.spm import train_sentencepiece
from glide_jax.train.experiment import DataConfig, ExperimentConfig
from glide_jax.train.sharding import wait_for_all_processes

TOKENIZER_FILE = "tokenizer.model"


def open_source(cfg: ExperimentConfig):
    """The random-access source ``cfg.data.source`` names (:mod:`glide_jax.data.sources`), at the model's size."""
    return sources.open_source(cfg.data, family_of(cfg.model).image_size(cfg.model))


def _caption(record) -> str:
    c = record["caption"]
    return c.decode("utf-8") if isinstance(c, bytes) else str(c)


# ----------------------------------------------------------------------------- tokenizers


def prepare_tokenizer(cfg: ExperimentConfig, workdir: Path, source) -> str:
    """Resolve ``data.tokenizer`` to a ``get_tokenizer`` spec, learning or copying a sentencepiece model
    into ``<workdir>/tokenizer.model`` when needed (there, the sampling loaders find it)."""
    kind = cfg.data.tokenizer
    vocab_size = family_of(cfg.model).vocab_size(cfg.model)
    if kind in ("glide-bpe", "clip"):
        spec = kind
    else:
        target = Path(workdir) / TOKENIZER_FILE
        if jax.process_index() == 0 and not target.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=workdir))
            try:
                if kind == "sentencepiece":
                    n = min(len(source), cfg.data.tokenizer_captions)
                    lines = [_caption(source[i]) for i in range(n)]
                    (tmp / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
                    # BPE, not unigram: on a small caption grammar it reaches whole-word pieces.
                    model = train_sentencepiece(tmp / "captions.txt", tmp / "spm", vocab_size, model_type="bpe",
                                                num_threads=1, hard_vocab_limit=False, minloglevel=2)
                elif kind.startswith("sentencepiece:"):
                    model = Path(kind.split(":", 1)[1]).expanduser()
                else:
                    raise InputError(f"unknown data.tokenizer {kind!r}")
                shutil.copyfile(model, tmp / TOKENIZER_FILE)
                os.replace(tmp / TOKENIZER_FILE, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        wait_for_all_processes("tokenizer")  # process 0 may take minutes to learn it
        spec = f"sentencepiece:{target}"
    tok = get_tokenizer(spec)
    if tok.n_vocab > vocab_size:
        raise InputError(f"tokenizer {spec} has {tok.n_vocab} ids but the model embeds only {vocab_size}")
    return spec


class Tokenize:
    """Picklable ``captions -> {key: array}``, the keys being the model family's ``text_keys``
    (``tokens`` and ``mask`` for the U-Nets, ``tokens`` and ``lens`` for CLIP)."""

    def __init__(self, spec: str, model: Union[ModelConfig, ClipConfig]):
        self.spec, self.model = spec, model
        self._tok = None

    def __getstate__(self):
        return {"spec": self.spec, "model": self.model, "_tok": None}

    def tokenizer(self):
        """The tokenizer of ``spec``, read on first use (worker processes read their own)."""
        if self._tok is None:
            self._tok = get_tokenizer(self.spec)
        return self._tok

    def __call__(self, captions: List[str]) -> Dict[str, np.ndarray]:
        family = family_of(self.model)
        return dict(zip(family.text_keys, family.encode_prompts(self.tokenizer(), self.model, captions)))


def make_tokenize(cfg: ExperimentConfig, spec: str) -> Tokenize:
    return Tokenize(spec, cfg.model)


# ----------------------------------------------------------------------------- iterator


def pipeline_config(cfg: ExperimentConfig) -> input_pipeline.PipelineConfig:
    family = family_of(cfg.model)
    return input_pipeline.PipelineConfig(
        image_size=family.image_size(cfg.model),
        global_batch_size=cfg.train.batch_size,
        seed=cfg.data.seed,
        worker_count=cfg.data.worker_count,
        **family.pipeline_inputs(cfg.model, cfg.data),
    )


def make_iterator(cfg: ExperimentConfig, source, tokenize: Tokenize, rows: Optional[Sequence[int]] = None):
    """This host's iterator of batches: its ``rows`` of every global batch (a training run passes
    ``input_pipeline.host_rows`` of its batch sharding; default: this process's equal share)."""
    return input_pipeline.make_iterator(source, pipeline_config(cfg), tokenize, rows=rows)


# ----------------------------------------------------------------------------- previews


def preview_inputs(cfg: ExperimentConfig, source, n: int, prompts=()) -> Dict[str, np.ndarray]:
    """Fixed sampling inputs: records ``0..n-1`` of the source (the same on every host).

    Returns ``captions`` (``prompts`` if given, else the records' captions),
    ``image`` (model size, [-1, 1]) and, as the model needs them, ``low_res``
    and ``inpaint_mask`` (seeded, so every preview uses the same masks).
    """
    pc = pipeline_config(cfg)
    records = [source[i % len(source)] for i in range(n)]
    images = np.stack([input_pipeline.to_model_image(r["image"], pc.image_size) for r in records])
    captions = list(prompts)[:n] if prompts else [_caption(r) for r in records]
    captions += [captions[i % len(captions)] for i in range(n - len(captions))]
    out = {"captions": np.array(captions, dtype=np.str_), "image": images}
    if pc.low_res_size:
        out["low_res"] = np.stack([input_pipeline.area_downsample(im, pc.low_res_size) for im in images])
    if pc.inpaint:
        rng = np.random.default_rng([cfg.data.seed, 12345])
        out["inpaint_mask"] = np.stack([random_inpaint_mask(rng, pc.image_size) for _ in range(n)])
    return out
