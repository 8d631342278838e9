"""The glide-jax demo as a Hugging Face Space (Gradio SDK): the embedded models on a CPU Space.

A Space runs ``python app.py`` and sends its visitors to port 7860 of the
container, so the page listens on 0.0.0.0 there (the server prints a warning
for that, as it does everywhere). ``GLIDE_JAX_MODEL`` (a Space variable)
serves another model set, e.g. ``openai`` on a Space with the checkpoints in
its cache. The package itself is the copy of ``glide_jax/`` pushed next to
this file (see README.md).
"""

import os

from glide_jax.demo.server import serve

if __name__ == "__main__":
    serve(model=os.environ.get("GLIDE_JAX_MODEL", "embedded"), host="0.0.0.0",
          port=int(os.environ.get("PORT", "7860")))
