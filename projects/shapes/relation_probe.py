"""Does a base model's prediction depend on a caption's relation word? A fast check, no sampling.

Why: generating and grading 128 held-out prompts takes minutes and reports
"position" only once a model places objects well enough to be detected. The
question behind a random-level position score is more basic: does the model
react to "above" versus "below" at all? The layout of a scene is decided at
high noise, where the denoiser's image estimate is close to the mean image of
all scenes matching the caption. For "a red circle above a blue square" that
mean is red at the top and blue at the bottom; for "... below ..." the
reverse. So, at a few noise levels, this probe compares:

* ``model``: the RMS difference between the model's mean predicted clean image
  (x0, averaged over ``n`` noise draws applied to the plain background) for a
  caption and for the same caption with its relation mirrored; and
* ``data``: the same difference between the two captions' true mean images,
  from the training scenes' own geometry (:func:`glide_jax.data.shapes.place_pair`).

A model that has learnt relations has ``model`` approaching ``data`` at high
noise; one that reads captions as a bag of colours and shapes has ``model``
near zero. ``colour`` gives the model's difference for a changed colour word,
as a yardstick of how strongly it follows the words it does use.

:func:`text_sensitivity` asks the same of the text encoder alone. A bag of
words cannot carry a relation ("A above B" and "B above A" share their words
and have opposite layouts), so it reports how far the pooled embedding moves
when the two noun phrases trade places (:func:`swapped`), next to the moves
for a mirrored relation and a new colour word.
"""

from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.data import shapes
from glide_jax.errors import InputError

DEFAULT_CAPTIONS = (
    "a red circle above a blue square",
    "a yellow triangle to the left of a purple circle",
    "a green square below a black triangle",
    "a white circle to the right of an orange square",
)


def mirrored(caption: str) -> str:
    """The caption with its relation replaced by the opposite one (raises for one-object captions)."""
    parsed = shapes.parse_caption(caption)
    if parsed.relation is None:
        raise InputError(f"the relation probe needs two-object captions, got {caption!r}")
    return shapes.format_caption(parsed.objects, shapes.MIRROR[parsed.relation])


def swapped(caption: str) -> str:
    """The caption with its two noun phrases exchanged: the same words, the opposite layout."""
    parsed = shapes.parse_caption(caption)
    if parsed.relation is None:
        raise InputError(f"the relation probe needs two-object captions, got {caption!r}")
    return shapes.format_caption(parsed.objects[::-1], parsed.relation)


def recoloured(caption: str) -> str:
    """The caption with its first object's colour changed to one the scene does not use."""
    parsed = shapes.parse_caption(caption)
    used = {o.color for o in parsed.objects}
    new = next(c for c in shapes.COLORS if c not in used)
    objects = [shapes.ObjectSpec(new, parsed.objects[0].shape)] + list(parsed.objects[1:])
    return shapes.format_caption(objects, parsed.relation)


def data_mean_image(caption: str, size: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """Mean over ``n`` training-geometry scenes of a two-object caption, float [size, size, 3] in [-1, 1]."""
    parsed = shapes.parse_caption(caption)
    if parsed.relation is None:
        raise InputError(f"the relation probe needs two-object captions, got {caption!r}")
    a, b = ((o.color, o.shape) for o in parsed.objects)
    rng = np.random.default_rng(seed)
    total = np.zeros((size, size, 3), np.float64)
    for _ in range(n):
        total += shapes.render_scene(shapes.place_pair(rng, a, b, parsed.relation), size)
    return (total / n / 127.5 - 1.0).astype(np.float32)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def model_mean_x0(model, captions: Sequence[str], t: int, n: int = 16, seed: int = 0) -> np.ndarray:
    """Mean predicted x0 ``[len(captions), S, S, 3]`` at diffusion index ``t`` from the background noised
    to ``t`` with the same ``n`` noise draws for every caption (``model``: a loaded base model)."""
    from glide_jax.diffusion import gaussian
    from glide_jax.diffusion.schedule import make_schedule
    from glide_jax.families.unet import unet_model_fn

    cfg = model.config
    if cfg.unet.super_res or cfg.unet.inpaint:
        raise InputError("the relation probe is for text-to-image base models")
    s = make_schedule(cfg.diffusion)
    if not 0 <= t < s.num_timesteps:
        raise InputError(f"t must be in [0, {s.num_timesteps}), got {t}")
    size, k = cfg.unet.image_size, len(captions)
    tokens, mask = model.tokens([c for c in captions for _ in range(n)])
    fn = unet_model_fn(cfg.unet, model.params, jnp.asarray(tokens), jnp.asarray(mask))
    noise = jnp.tile(jax.random.normal(jax.random.PRNGKey(seed), (n, size, size, 3)), (k, 1, 1, 1))
    canvas = jnp.broadcast_to(jnp.asarray(shapes.BACKGROUND, jnp.float32) / 127.5 - 1.0, noise.shape)
    tt = jnp.full((k * n,), t, jnp.int32)
    x_t = gaussian.q_sample(s, canvas, tt, noise)
    x0 = gaussian.p_mean_variance(s, fn(x_t, tt), x_t, tt).pred_xstart
    return np.asarray(x0).reshape((k, n) + x0.shape[1:]).mean(axis=1)


COUNTERPARTS = {"mirror": mirrored, "swap": swapped}


def relation_sensitivity(model, captions: Sequence[str] = DEFAULT_CAPTIONS, ts: Sequence[int] = (950, 900, 800),
                         n: int = 16, seed: int = 0, data_n: int = 1000,
                         counterpart: str = "mirror") -> Dict[int, Dict[str, float]]:
    """``{t: {"model", "data", "colour"}}``: mean RMS differences over ``captions`` (see the module docs);
    ``n`` noise draws per caption for the model, ``data_n`` scenes per caption for the true means.

    ``counterpart`` picks the caption each one is compared with: ``"mirror"`` flips the relation
    word, ``"swap"`` exchanges the noun phrases. Both flip the true layout; the swap keeps the bag
    of words, so only a model that binds each phrase to its place can tell the two apart (and it
    stays meaningful for a model trained on a single relation, where a mirrored word is unseen)."""
    if counterpart not in COUNTERPARTS:
        raise InputError(f"unknown counterpart {counterpart!r}; expected one of {sorted(COUNTERPARTS)}")
    size = model.config.unet.image_size
    others = [COUNTERPARTS[counterpart](c) for c in captions]
    recol = [recoloured(c) for c in captions]
    data = float(np.mean([_rms(data_mean_image(c, size, data_n, seed), data_mean_image(m, size, data_n, seed))
                          for c, m in zip(captions, others)]))
    out = {}
    for t in ts:
        x0 = model_mean_x0(model, list(captions) + others + recol, int(t), n, seed)
        k = len(captions)
        out[int(t)] = {
            "model": float(np.mean([_rms(x0[i], x0[k + i]) for i in range(k)])),
            "data": data,
            "colour": float(np.mean([_rms(x0[i], x0[2 * k + i]) for i in range(k)])),
        }
    return out


def text_sensitivity(model, captions: Sequence[str] = DEFAULT_CAPTIONS) -> Dict[str, float]:
    """Mean relative change of the pooled text embedding (``xf_proj``, which drives every residual
    block) for a mirrored relation, swapped noun phrases and a new colour word: ``{"relation",
    "order", "colour"}``, each ``|e(c') - e(c)| / |e(c)|`` averaged over ``captions``."""
    from glide_jax.families.unet import text_encoder

    k = len(captions)
    variants = list(captions) + [mirrored(c) for c in captions] + [swapped(c) for c in captions] + \
        [recoloured(c) for c in captions]
    tokens, mask = model.tokens(variants)
    pooled = np.asarray(text_encoder(model.config.unet)(model.params, jnp.asarray(tokens), jnp.asarray(mask))[0],
                        np.float64)
    base = pooled[:k]
    change = lambda j: float(np.mean(np.linalg.norm(pooled[j * k:(j + 1) * k] - base, axis=-1)  # noqa: E731
                                     / np.linalg.norm(base, axis=-1)))
    return {"relation": change(1), "order": change(2), "colour": change(3)}
