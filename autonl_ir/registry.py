"""``Registry``: the one name-keyed table behind every registry of autonl.

Ops, passes, pipelines, presets, search spaces, targets, backends, torch lowerings and ONNX
emitters are each a ``Registry``. All behave alike: a second entry under a name is refused
(:class:`DuplicateNameError`), an unknown name is answered with the close matches and the
known names (:class:`UnknownNameError`), and iteration is in name order.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """``{name: entry}`` that refuses duplicates and names the candidates of a miss.

    ``kind`` is what an entry is called in messages (``"pass"``, ``"op for the torch
    backend"``); ``plural`` its plural where adding an ``s`` is wrong. ``on_miss`` runs once
    before a miss is reported (the pass registry loads plugins there)."""

    def __init__(self, kind: str, plural: str | None = None, on_miss: Callable[[], None] | None = None):
        self.kind = kind
        self.plural = plural
        self._entries: dict[str, T] = {}
        self._on_miss = on_miss

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            owner = getattr(self._entries[name], "__module__", None)
            by = f" (by {owner})" if isinstance(owner, str) else ""
            raise DuplicateNameError(f"{self.kind} '{name}' is already registered{by}")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object under ``name``."""
        return lambda entry: self.register(name, entry)

    def get(self, name: str) -> T:
        if name not in self._entries and self._on_miss is not None:
            self._on_miss()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries, plural=self.plural) from None

    __getitem__ = get

    def values(self) -> list[T]:
        return [entry for _, entry in self.items()]

    def find(self, name: str) -> T | None:
        """The entry, or None (no error, no plugin loading)."""
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def as_dict(self) -> dict[str, T]:
        return dict(self.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} {self.plural or self.kind + 's'}>"
