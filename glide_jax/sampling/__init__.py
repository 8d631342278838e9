"""Sampling with loaded GLIDE models: the pipeline (text to 64 to 256, inpainting, editing, CLIP guidance)
and its stages, stage options and a model's recommended settings (``sampling.json``), prompt rewriting,
the networks as sampler callables, image input/output and progress display."""
