"""Research projects built on the glide_jax library; nothing in ``glide_jax`` imports them."""
