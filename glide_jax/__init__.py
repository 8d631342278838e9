"""glide_jax: GLIDE (Nichol et al. 2021) text-to-image diffusion in JAX/Flax.

The public face re-exports the few things most users need; submodules are
imported lazily so ``import glide_jax`` stays cheap.

    from glide_jax import load_pipeline
    images = load_pipeline().generate(["a red circle above a blue square"], seed=0)  # embedded, offline
    openai = load_pipeline("base", "upsample")  # GLIDE (filtered), after `glide-jax download`
"""

from __future__ import annotations

import importlib

from glide_jax import runtime as _runtime

_runtime.apply_cpu_defaults()  # before any computation initialises XLA: see glide_jax/runtime.py

_EXPORTS = {
    "Pipeline": "glide_jax.sampling.pipeline",
    "StageOptions": "glide_jax.sampling.pipeline",
    "LoadedModel": "glide_jax.sampling.pipeline",
    "load": "glide_jax.hub.loading",
    "load_pipeline": "glide_jax.hub.loading",
    "get_preset": "glide_jax.config",
    "PRESETS": "glide_jax.config",
    "save_images": "glide_jax.sampling.images",
    "make_grid": "glide_jax.sampling.images",
}

__all__ = sorted(_EXPORTS) + ["sample"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'glide_jax' has no attribute {name!r}")


def sample(prompts, *, base: str = "embedded-base", upsampler: str | None = "embedded-upsample", **kwargs):
    """One-call sampling: load (and cache) a pipeline, then ``Pipeline.generate(prompts, **kwargs)``."""
    from glide_jax.hub.loading import load_pipeline

    key = (base, upsampler)
    cache = sample.__dict__.setdefault("_pipelines", {})
    if key not in cache:
        cache[key] = load_pipeline(base, upsampler)
    return cache[key].generate(prompts, **kwargs)
