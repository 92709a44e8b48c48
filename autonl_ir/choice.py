"""``Choice``: an attribute value that the search decides.

Searchability is data: a node whose attributes hold a ``Choice`` is *relaxed*. The
decision for it is addressed as ``{node_name: {attr_name: value}}`` (see
:mod:`autonl.ir.decisions`), so a choice needs no label of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Any, Iterator

from .errors import AutonlError


@dataclass(frozen=True)
class Choice:
    """A set of candidate values for one attribute, in the order the user wrote them."""

    options: tuple[Any, ...]

    def __init__(self, *options: Any):
        if len(options) == 1 and isinstance(options[0], (list, tuple)):
            options = tuple(options[0])
        if len(options) < 2:
            raise AutonlError(f"choice needs at least two options, got {list(options)}")
        for i, a in enumerate(options):
            if isinstance(a, Choice):
                raise AutonlError("a choice cannot contain another choice")
            if any(same_value(a, b) for b in options[:i]):
                raise AutonlError(f"choice has a duplicate option {a!r}: {list(options)}")
        object.__setattr__(self, "options", tuple(options))

    def __contains__(self, value: Any) -> bool:
        return any(same_value(value, o) for o in self.options)

    def __iter__(self):
        return iter(self.options)

    def __len__(self) -> int:
        return len(self.options)

    def __repr__(self) -> str:
        return f"Choice({', '.join(repr(o) for o in self.options)})"


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``, ``1`` and ``1.0`` apart (they print differently)."""
    return type(a) is type(b) and a == b


def is_relaxed_value(value: Any) -> bool:
    return isinstance(value, Choice)


MAX_COMBINATIONS = 256


def attr_combinations(attrs: dict[str, Any], limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every discrete assignment of a node's attributes, one per combination of its choices.

    Past ``limit`` combinations, vary one choice at a time around the first options instead.
    """
    keys = [k for k, v in attrs.items() if isinstance(v, Choice)]
    total = 1
    for k in keys:
        total *= len(attrs[k])
    if limit is not None and total > limit:
        base = {k: (v.options[0] if isinstance(v, Choice) else v) for k, v in attrs.items()}
        yield base
        for k in keys:
            for o in attrs[k].options[1:]:
                yield {**base, k: o}
        return
    for values in itertools.product(*(attrs[k].options for k in keys)):
        yield {**attrs, **dict(zip(keys, values))}
