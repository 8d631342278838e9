"""GLIDE's text transformer at the embedded base's size can represent word order (slow: ``pytest -m slow``).

Why: the embedded base ignores relation words, and a bag of words cannot carry a
relation ("A above B" and "B above A" share their words). This checks that the
architecture is not the reason: trained on its own, with the pooled output as
GLIDE uses it, it learns which colour a two-object caption puts on top or left.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import flax.linen as nn

from glide_jax.data import shapes

COLOURS = list(shapes.COLORS)


def _batch(model, rng, n):
    captions, labels = [], []
    for _ in range(n):
        objects, relation = shapes.sample_scene(rng, p_two=1.0)
        captions.append(shapes.format_caption([shapes.ObjectSpec(o.color, o.shape) for o in objects], relation))
        first = relation in ("above", "to the left of")
        labels.append(COLOURS.index(objects[0].color if first else objects[1].color))
    tokens, mask = model.tokens(captions)
    return jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(labels)


@pytest.mark.slow
def test_text_encoder_learns_which_colour_a_relation_puts_first():
    from glide_jax.sampling.loading import resolve as load
    from glide_jax.models.text import TextEncoder

    model = load("embedded-base")
    text = model.config.unet.text

    class Head(nn.Module):
        @nn.compact
        def __call__(self, tokens, mask):
            pooled, _ = TextEncoder(text, 128)(tokens, mask)
            return nn.Dense(len(COLOURS))(nn.gelu(pooled))

    head, rng = Head(), np.random.default_rng(0)
    params = head.init(jax.random.PRNGKey(0), *_batch(model, rng, 2)[:2])
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, tokens, mask, labels):
        def loss(p):
            logits = head.apply(p, tokens, mask)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits.argmax(-1) == labels
        (_, hits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, hits.mean()

    accuracy = []
    for _ in range(500):
        params, opt_state, acc = step(params, opt_state, *_batch(model, rng, 32))
        accuracy.append(float(acc))
    # A bag of words is right half the time at best (it knows the two colours, not which is first).
    assert np.mean(accuracy[:20]) < 0.5 and np.mean(accuracy[-100:]) > 0.95
