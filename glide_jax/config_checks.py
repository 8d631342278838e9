"""The range checks every config dataclass runs on its fields when it is built.

Why here and not in each config: a zero or negative size, count or step number is accepted by the
arithmetic that uses it and fails far away, so every config section (model, data, training, mesh,
preview) checks its numbers the same way and names the field at fault.
"""

from __future__ import annotations

from typing import Any, Optional

from glide_jax.errors import InputError


def check_counts(owner: str, minimum: int = 1, *, unset: Optional[int] = None, **fields: Any) -> None:
    """Raise one InputError naming ``owner.field`` and its value for the first field that is not an integer
    of at least ``minimum`` (``unset``, e.g. -1, is also accepted when given: it means "derive it").

    Why: a zero or negative size, count or step number is accepted by the arithmetic that uses it and fails
    far away (a ZeroDivisionError in a layer, a training run that "finishes" at step 0), so configs check
    their counts where they are built, and ``--set`` overrides are checked the same way.
    """
    for name, value in fields.items():
        if value == unset and unset is not None and isinstance(value, int):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            also = f" (or {unset})" if unset is not None else ""
            raise InputError(f"{owner}.{name} must be an integer >= {minimum}{also}, got {value!r}")


def check_fraction(owner: str, **fields: Any) -> None:
    """Raise one InputError naming ``owner.field`` for the first value outside [0, 1]."""
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InputError(f"{owner}.{name} must be a number in [0, 1], got {value!r}")
