"""Prompt rewriting: say a prompt in words the model was trained on before sampling it.

Why: a small model trained on part of a language (say, only some of the
relations of its captions) can be asked for the rest by rephrasing: "A to the
right of B" is the same scene as "B to the left of A". The library knows no
such language; a model directory carries its own rules in ``sampling.json``::

    "prompt_rewrites": [{"pattern": "<regex>", "replacement": "<re.sub template>", "note": "<why>"}]

Each rule is tried in order on the whitespace-stripped prompt and applies when
its pattern matches the whole of it (``re.fullmatch``); the prompt becomes
``match.expand(replacement)`` and the next rule sees that. A prompt no rule
matches is returned unchanged. Callers may pass any ``Callable[[str], str]``
instead (``Pipeline(prompt_rewriter=...)``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

from glide_jax.errors import InputError

PromptRewriter = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class RewriteRule:
    """One rule: the whole (stripped) prompt matches ``pattern``; it becomes ``replacement`` expanded."""

    pattern: str
    replacement: str
    note: Optional[str] = None

    def __post_init__(self):
        try:
            compiled = re.compile(self.pattern)
        except re.error as e:
            raise InputError(f"prompt rewrite pattern {self.pattern!r} is not a valid regular expression: {e}") from None
        object.__setattr__(self, "_compiled", compiled)
        try:  # a template naming groups the pattern lacks fails here, not on the first matching prompt
            compiled.sub(self.replacement, "")
        except (re.error, IndexError) as e:
            raise InputError(f"prompt rewrite replacement {self.replacement!r} does not fit pattern "
                             f"{self.pattern!r}: {e}") from None

    def apply(self, prompt: str) -> Optional[str]:
        """The rewritten prompt, or None when the rule does not match the whole prompt."""
        match = self._compiled.fullmatch(prompt.strip())
        return None if match is None else match.expand(self.replacement)


@dataclasses.dataclass(frozen=True)
class PromptRewrites:
    """An ordered list of ``RewriteRule``; calling it rewrites one prompt."""

    rules: Tuple[RewriteRule, ...] = ()

    def __call__(self, prompt: str) -> str:
        return self.explain(prompt)[0]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def explain(self, prompt: str) -> Tuple[str, List[str]]:
        """``(rewritten prompt, notes of the rules that applied)``; the prompt itself when none did."""
        notes, current, changed = [], prompt, False
        for rule in self.rules:
            rewritten = rule.apply(current)
            if rewritten is not None:
                current, changed = rewritten, True
                if rule.note:
                    notes.append(rule.note)
        return (current if changed else prompt), notes

    @classmethod
    def from_json(cls, rules: Any, where: str = "prompt_rewrites") -> "PromptRewrites":
        """Rules from their JSON form: a list of ``{"pattern", "replacement", "note"?}`` objects."""
        if not isinstance(rules, list):
            raise InputError(f"{where} must be a list of rules, got {type(rules).__name__}")
        parsed = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                raise InputError(f"{where}[{i}] must be an object with pattern and replacement, got {rule!r}")
            unknown = set(rule) - {"pattern", "replacement", "note"}
            missing = {"pattern", "replacement"} - set(rule)
            if unknown or missing:
                raise InputError(f"{where}[{i}]: " + "; ".join(
                    ([f"unknown keys {sorted(unknown)}"] if unknown else [])
                    + ([f"missing {sorted(missing)}"] if missing else [])))
            if not all(isinstance(rule[k], str) for k in rule if rule[k] is not None):
                raise InputError(f"{where}[{i}]: pattern, replacement and note must be strings")
            parsed.append(RewriteRule(rule["pattern"], rule["replacement"], rule.get("note")))
        return cls(tuple(parsed))


def rewrite_all(rewriter: Optional[PromptRewriter], prompts: Sequence[str]) -> List[str]:
    """``prompts`` through ``rewriter`` (unchanged without one); a rewriter must give back strings."""
    if rewriter is None:
        return list(prompts)
    out = [rewriter(p) for p in prompts]
    bad = [o for o in out if not isinstance(o, str)]
    if bad:
        raise InputError(f"the prompt rewriter must return strings, got {type(bad[0]).__name__}")
    return out


def explain_all(rewriter: Optional[PromptRewriter], prompts: Iterable[str]) -> List[Tuple[str, str, List[str]]]:
    """``(prompt, rewritten, notes)`` for every prompt the rewriter changes (notes only from rules)."""
    out = []
    for prompt in prompts:
        if isinstance(rewriter, PromptRewrites):
            said, notes = rewriter.explain(prompt)
        else:
            said, notes = rewrite_all(rewriter, [prompt])[0], []
        if said != prompt:
            out.append((prompt, said, notes))
    return out
