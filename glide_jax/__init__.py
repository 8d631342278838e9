"""glide_jax: GLIDE (Nichol et al. 2021) text-to-image diffusion in JAX/Flax.

The public face re-exports the few things most users need; submodules are
imported lazily so ``import glide_jax`` stays cheap.

    from glide_jax import load_pipeline
    images = load_pipeline().generate(["a red circle above a blue square"], seed=0)  # embedded, offline
    openai = load_pipeline("base", "upsample")  # GLIDE (filtered), after `glide-jax download`
    model = load("path/to/model_dir")  # any model source: see glide_jax.hub.registry
"""

from __future__ import annotations

import importlib

from glide_jax import runtime as _runtime

_runtime.apply_cpu_defaults()  # before any computation initialises XLA: see glide_jax/runtime.py

# Public name -> (module, attribute there).
_EXPORTS = {
    "Pipeline": ("glide_jax.sampling.pipeline", "Pipeline"),
    "StageOptions": ("glide_jax.sampling.options", "StageOptions"),
    "LoadedModel": ("glide_jax.sampling.loaded_model", "LoadedModel"),
    "load": ("glide_jax.sampling.loading", "resolve"),
    "load_pipeline": ("glide_jax.sampling.loading", "load_pipeline"),
    "get_preset": ("glide_jax.config", "get_preset"),
    "PRESETS": ("glide_jax.config", "PRESETS"),
    "save_images": ("glide_jax.sampling.images", "save_images"),
    "make_grid": ("glide_jax.sampling.images", "make_grid"),
}

__all__ = sorted(_EXPORTS) + ["sample"]


def __getattr__(name):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'glide_jax' has no attribute {name!r}")


def sample(prompts, *, base: str = "embedded-base", upsampler: str | None = "embedded-upsample", **kwargs):
    """One-call sampling: load (and cache) a pipeline, then ``Pipeline.generate(prompts, **kwargs)``."""
    from glide_jax.sampling.loading import load_pipeline  # deferred: `import glide_jax` stays cheap

    key = (base, upsampler)
    cache = sample.__dict__.setdefault("_pipelines", {})
    if key not in cache:
        cache[key] = load_pipeline(base, upsampler)
    return cache[key].generate(prompts, **kwargs)
