"""Say a captioned-shapes caption with the relations a model was trained on.

"A to the right of B" is the same scene as "B to the left of A", and "A below
B" the same as "B above A". The shipped embedded base was trained on "above",
"below" and "to the left of" only (its left-right routing is lost when "to the
right of" is trained too; see the project README), so a caption with "to the
right of" is best sampled as its converse. The library knows nothing of this
grammar: the embedded models' ``sampling.json`` carries the same rewrite as
``prompt_rewrites`` regular expressions (:func:`rewrite_rules`, written by the
export), which ``Pipeline.generate`` applies. :func:`restate` is the
grammar-aware statement of that rewrite; the project's tests check that the two
agree on every caption of the grammar.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from glide_jax.data import shapes


def restate(caption: str, relations: Sequence[str]) -> str:
    """``caption`` said with a relation in ``relations`` when it can be, else unchanged.

    Returned unchanged: captions outside the shapes grammar, one-object
    captions, and captions whose relation is in ``relations`` or whose converse
    is not. Restating loses nothing: the converse describes exactly the same
    images, and a held-out combination and its converse are held out together,
    so a held-out caption never becomes a trained one.
    """
    try:
        parsed = shapes.parse_caption(caption)
    except ValueError:
        return caption
    relation = parsed.relation
    if relation is None or relation in relations or shapes.MIRROR[relation] not in relations:
        return caption
    return shapes.format_caption(parsed.objects[::-1], shapes.MIRROR[relation])


def rewrite_rules(relations: Sequence[str]) -> List[Dict[str, str]]:
    """The ``prompt_rewrites`` of a model trained on ``relations`` (see :mod:`glide_jax.sampling.rewrites`):
    one rule per relation that is not in ``relations`` but whose converse is, saying "A REL B" as
    "B CONVERSE A". Empty when nothing needs restating (all four relations, or no converse trained)."""
    relations = shapes.check_relations(relations)
    trained = ", ".join(f"'{r}'" for r in relations)
    rules = []
    for relation in shapes.RELATIONS:
        converse = shapes.MIRROR[relation]
        if relation in relations or converse not in relations:
            continue
        rules.append({
            "pattern": rf"(?P<first>an? .+?) {relation} (?P<second>an? .+)",  # relations are plain words
            "replacement": rf"\g<second> {converse} \g<first>",
            "note": f"the same scene in the relations the model was trained on: {trained}",
        })
    return rules
