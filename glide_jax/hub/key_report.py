"""How a state dict that does not fit a model is reported: counts, and the first few keys of each kind.

A checkpoint of another architecture differs in hundreds of keys (the released
base U-Net has 783); listing them all buries the one line that says what is
wrong. Every converter and the warm start therefore report a mismatch through
:func:`summarise`: one header, then per kind of problem (missing, unexpected,
mis-shaped) its count and its first :data:`MAX_LISTED` entries in sorted order.
The exceptions keep the full lists as attributes for code that needs them.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple

MAX_LISTED = 5  # entries named per kind of problem


def first_few(items: Iterable[str], limit: int = MAX_LISTED) -> str:
    """``"a, b, c and 7 more"``: the first ``limit`` of the sorted ``items`` and how many are left out."""
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def summarise(header: str, groups: Sequence[Tuple[str, Iterable[str]]], limit: int = MAX_LISTED) -> str:
    """``header`` and one indented line per non-empty group: ``"  <title> (<count>): <first few>"``."""
    lines = [header]
    for title, items in groups:
        items = list(items)
        if items:
            lines.append(f"  {title} ({len(items)}): {first_few(items, limit)}")
    return "\n".join(lines)
