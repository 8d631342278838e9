"""Prompt rewrite rules and the sampling-advice file they live in."""

import pytest

from glide_jax.sampling.advice import SamplingAdvice
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.rewrites import PromptRewrites, RewriteRule, explain_all, rewrite_all
from model_files import rewrites_to_json

SWAP = {"pattern": r"(?P<a>an? .+?) to the right of (?P<b>an? .+)", "replacement": r"\g<b> to the left of \g<a>",
        "note": "left only"}


def test_a_rule_applies_to_the_whole_stripped_prompt_only():
    rules = PromptRewrites.from_json([SWAP])
    assert rules("a red circle to the right of a blue square") == "a blue square to the left of a red circle"
    assert rules("  a red circle to the right of a blue square \n") == "a blue square to the left of a red circle"
    # re.fullmatch: a prompt that merely contains the phrase is left as it is
    assert rules("draw a red circle to the right of a blue square") == "draw a red circle to the right of a blue square"
    assert rules("  unmatched  ") == "  unmatched  "  # no rule applied: returned exactly as given
    assert rules.explain("a x to the right of a y") == ("a y to the left of a x", ["left only"])


def test_rules_apply_in_order_each_to_the_previous_result():
    rules = PromptRewrites.from_json([{"pattern": "cat (.*)", "replacement": r"dog \1", "note": "first"},
                                      {"pattern": r"dog (\w+)", "replacement": r"\1 dog"},
                                      {"pattern": "cat", "replacement": "never"}])
    assert rules.explain("cat house") == ("house dog", ["first"])
    assert rules("dog house") == "house dog" and rules("cat") == "never" and rules("cats") == "cats"
    assert PromptRewrites.from_json(rewrites_to_json(rules)) == rules


@pytest.mark.parametrize("rules, match", [
    ({"pattern": "x"}, "must be a list"),
    (["x"], r"prompt_rewrites\[0\] must be an object"),
    ([{"pattern": "x"}], r"missing \['replacement'\]"),
    ([{"pattern": "x", "replacement": "y", "flags": "i"}], r"unknown keys \['flags'\]"),
    ([{"pattern": "(", "replacement": "y"}], "not a valid regular expression"),
    ([{"pattern": "(a)", "replacement": r"\2"}], "does not fit pattern"),
    ([{"pattern": "(?P<a>x)", "replacement": r"\g<b>"}], "does not fit pattern"),
    ([{"pattern": 3, "replacement": "y"}], "must be strings"),
])
def test_bad_rules_are_named(rules, match):
    with pytest.raises(ValueError, match=match):
        PromptRewrites.from_json(rules)


def test_callers_rewriters_and_explanations():
    assert rewrite_all(None, ["a", "b"]) == ["a", "b"]
    assert rewrite_all(str.upper, ["a", "b"]) == ["A", "B"]
    with pytest.raises(ValueError, match="must return strings"):
        rewrite_all(len, ["a"])
    rules = PromptRewrites.from_json([SWAP])
    prompts = ["a p to the right of a q", "a z above a w"]
    assert explain_all(rules, prompts) == [("a p to the right of a q", "a q to the left of a p", ["left only"])]
    assert explain_all(lambda p: p.replace("z", "y"), prompts) == [("a z above a w", "a y above a w", [])]
    assert explain_all(None, prompts) == []


def test_sampling_advice_reads_every_key_and_rejects_unknown_ones():
    advice = SamplingAdvice.from_json({"sampler": "ddim", "steps": 9, "guidance_scale": 2, "prompt_rewrites": [SWAP]})
    assert advice.stage == StageOptions("ddim", 9) and advice.guidance_scale == 2.0
    assert advice.prompt_rewrites == PromptRewrites((RewriteRule(SWAP["pattern"], SWAP["replacement"], "left only"),))
    only_rules = SamplingAdvice.from_json({"prompt_rewrites": [SWAP]})
    assert only_rules.stage is None and only_rules.guidance_scale is None and only_rules.prompt_rewrites
    assert SamplingAdvice.from_json(None) == SamplingAdvice()
    with pytest.raises(ValueError, match=r"sampling.json: unknown sampling settings \['stepz'\]"):
        SamplingAdvice.from_json({"stepz": 3})
    with pytest.raises(ValueError, match="guidance_scale must be a number"):
        SamplingAdvice.from_json({"guidance_scale": "high"})
