"""A table of things by name, filled at import time: what the family, task, sampler and data-source
registries share.

Registering a name twice is a programming error of whoever registers (two plugins claiming one name), so
it raises ``ValueError``; looking up a name nobody registered is the user's mistake (a config or a flag
naming it), so it raises :class:`~glide_jax.errors.InputError` listing what exists.
"""

from __future__ import annotations

from typing import Dict, Generic, List, Tuple, TypeVar

from glide_jax.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``what`` names the kind in messages: "sampler", "training task", ...)."""

    def __init__(self, what: str):
        self.what = what
        self._entries: Dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if not name:
            raise ValueError(f"a {self.what} needs a name")
        if name in self._entries:
            raise ValueError(f"a {self.what} named {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def get(self, name: str, hint: str = "") -> T:
        """The entry ``name``; an ``InputError`` listing the registered names for anything else."""
        if name not in self._entries:
            where = f"{hint} " if hint else ""
            raise InputError(f"unknown {where}{self.what} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test's temporary entry); nothing happens for an unknown name."""
        self._entries.pop(name, None)

    def names(self) -> Tuple[str, ...]:
        return tuple(self._entries)

    def values(self) -> List[T]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
