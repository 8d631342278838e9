"""Sampling with loaded GLIDE models: the pipeline (text to 64 to 256, inpainting, editing, CLIP guidance),
the networks as sampler callables, image input/output and progress display."""
