"""Names and folders of the models that ship inside the package.

Why: a new user should get an image from a prompt right after ``pip install``,
with no network and no 1.5 GB download. The five tiny models (a 32x32 base, its
few-step distillation, a 32->64 upsampler, a base inpainting model and a
noise-aware CLIP) were trained on procedural captioned shapes, so they only know
that grammar ("a red circle above a blue square").

Each is a model directory (:mod:`glide_jax.hub.model_dir`) under
``glide_jax/assets/embedded/<kind>/`` with float16 parameters, its
sentencepiece ``tokenizer.model``, ``training.json`` (how it was made) and,
for the diffusion models, ``sampling.json`` (the sampler settings it is
evaluated with, and the prompt rewrites of the base models). They load by name:
``embedded-base``, ``embedded-fast``, ``embedded-upsample``, ``embedded-inpaint``, ``embedded-clip``.
"""

from __future__ import annotations

from pathlib import Path

from glide_jax.errors import InputError

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "embedded"
# The role each embedded model plays in its model set; "fast" is the base distilled to a few steps, the base
# of the "embedded-fast" set (projects/shapes/configs/distill.py).
ROLES = ("base", "fast", "upsample", "inpaint", "clip")
PREFIX = "embedded-"
NAMES = tuple(PREFIX + role for role in ROLES)


def is_embedded(name) -> bool:
    return isinstance(name, str) and name in NAMES


def embedded_dir(name: str) -> Path:
    """Folder of an embedded model, by name (``embedded-base``) or role (``base``)."""
    role = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if role not in ROLES:
        raise InputError(f"unknown embedded model {name!r}; known: {', '.join(NAMES)}")
    return ASSET_DIR / role
