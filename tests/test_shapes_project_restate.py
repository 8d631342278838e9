"""Restating shapes captions, and the embedded models' prompt rewrites that do it inside the library."""

import json

import pytest

from glide_jax.data import shapes
from glide_jax.hub import embedded
from glide_jax.sampling.rewrites import PromptRewrites
from projects.shapes.restate import restate, rewrite_rules

SHIPPED_RELATIONS = ("above", "below", "to the left of")


def test_restate_says_the_same_scene_with_a_trained_relation():
    said = restate("a red circle to the right of an orange square", SHIPPED_RELATIONS)
    assert said == "an orange square to the left of a red circle"
    # The restated caption describes the same layout: the red circle is still the right-hand object.
    for caption in ("a red circle to the right of an orange square", said):
        parsed = shapes.parse_caption(caption)
        right = parsed.objects[0] if parsed.relation == "to the right of" else parsed.objects[1]
        assert (right.color, right.shape) == ("red", "circle")
    assert restate("a green square below a blue circle", ("above",)) == "a blue circle above a green square"
    # Unchanged: a trained relation, an untrained one whose converse is untrained too, one object, free text.
    for caption, relations in [("a red circle below a blue square", SHIPPED_RELATIONS),
                               ("a red circle to the right of a blue square", ("above", "below")),
                               ("a large red circle", ("above",)), ("an oil painting of a corgi", ("above",))]:
        assert restate(caption, relations) == caption


def _grammar_captions():
    """Every caption of the grammar, once: each one-object and each two-object caption (the held-out
    captions among them)."""
    objects = [shapes.ObjectSpec(c, s) for c in shapes.COLORS for s in shapes.SHAPES]
    pairs = [shapes.format_caption([a, b], r) for a in objects for b in objects if a.color != b.color
             for r in shapes.RELATIONS]
    heldout = shapes.heldout_prompts(128)
    single = shapes.single_prompts(72)
    assert set(heldout) <= set(pairs) and len(pairs) == 24 * 21 * 4
    return single + pairs


@pytest.mark.parametrize("kind", ["base", "inpaint"])
def test_the_shipped_prompt_rewrite_restates_every_caption_of_the_grammar(kind):
    """The rule in the embedded model's sampling.json is the library-side form of ``restate``: on every
    caption of the grammar it gives exactly what ``restate`` gives for the model's trained relations."""
    sampling = json.loads((embedded.embedded_dir(kind) / "sampling.json").read_text())
    rules = PromptRewrites.from_json(sampling.get("prompt_rewrites"), f"{kind}/sampling.json")
    assert rules, f"the embedded {kind} model's sampling.json has no prompt_rewrites"
    captions = _grammar_captions()
    changed = 0
    for caption in captions:
        want = restate(caption, SHIPPED_RELATIONS)
        assert rules(caption) == want, caption
        changed += want != caption
    assert changed == 24 * 21  # every "to the right of" caption, and nothing else
    # The export writes the same rules from the relations the run was trained on.
    trained = tuple(json.loads((embedded.embedded_dir(kind) / "training.json").read_text())["data"]["relations"])
    assert trained == SHIPPED_RELATIONS
    assert rewrite_rules(trained) == sampling["prompt_rewrites"]


def test_rewrite_rules_follow_restate_for_any_trained_subset():
    captions = _grammar_captions()
    for relations in [("above",), ("above", "to the left of"), ("below", "to the right of"), shapes.RELATIONS]:
        rules = PromptRewrites.from_json(rewrite_rules(relations))
        assert len(rules.rules) == sum(r not in relations and shapes.MIRROR[r] in relations for r in shapes.RELATIONS)
        assert all(rules(c) == restate(c, relations) for c in captions), relations
    assert rewrite_rules(shapes.RELATIONS) == []
    with pytest.raises(ValueError, match="relations must be distinct items"):
        rewrite_rules(("above", "on top of"))
