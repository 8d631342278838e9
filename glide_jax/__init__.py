"""GLIDE in JAX/Flax."""
