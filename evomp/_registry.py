"""Name -> part registries (engines, algorithms, samplers, surrogates, selection rules).

A registry refuses a duplicate name and answers an unknown one with the spec key and the
registered names, so the spec validates against the registry itself instead of keeping
its own copy of the names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from evomp._errors import EvompError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Parts by name.

    Args:
        key: the spec key the names are given under (``"search.engine"``), for messages.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name already taken raises ``ValueError``."""
        if name in self._items:
            raise ValueError(f"{self.key}: {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The part named ``name``; an unknown name raises :class:`EvompError`."""
        try:
            return self._items[name]
        except KeyError:
            raise EvompError(
                f"{self.key} must be one of {', '.join(map(repr, self._items))}, got {name!r}"
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
