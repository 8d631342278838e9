"""``glide-jax serve``: a Gradio page for generating, inpainting and editing with loaded models.

The pieces, one idea each: :mod:`.models` loads and compiles the models once at
start-up; :mod:`.handlers` turns one request's form values into images (plain
functions, testable without a browser or Gradio); :mod:`.progress` feeds the
sampler's progress callback to the page; :mod:`.app` lays out the page;
:mod:`.server` binds it to an address with a queue and a temporary upload
directory. Gradio is an optional extra (``pip install -e ".[demo]"``) and is
imported only inside functions, so the package imports without it.
"""
