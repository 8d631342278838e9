"""Metrics of generated images against references or captions (CLIP score, ...), computed in JAX.

Each metric lives in its own module and reproduces a published implementation's definition,
with any deliberate difference stated in that module's docstring.
"""
