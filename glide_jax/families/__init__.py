"""The built-in model families: GLIDE's diffusion U-Nets and its noise-aware CLIP.

A family (:class:`glide_jax.family.ModelFamily`) answers every
model-specific question the rest of the package asks: which Flax module a
config builds and its sizes, example inputs, how prompts become its text
inputs, how OpenAI's PyTorch state dicts convert into its parameters, what a
training batch holds, its train step and its training preview, and what the
benchmarks feed it. Code elsewhere calls ``family_of(config)`` and asks;
nothing else keeps a table keyed by family names.

The built-in families are GLIDE's diffusion U-Nets (:mod:`.unet`) and its
noise-aware CLIP (:mod:`.noisy_clip`). A new family subclasses ``ModelFamily``
and calls ``register_family`` (``tests/test_extension_points.py`` registers a
toy one and trains, saves, loads and samples it). This package imports nothing
on its own: ``glide_jax.family`` loads the built-in families the first time it
is asked, because they compose training and hub code that itself asks it.
"""
