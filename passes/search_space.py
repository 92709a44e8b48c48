"""``SearchSpace``: the choices of a relaxed graph as one object, in the spirit of NNI's
mutables: ``{(node, attr): Choice}``, with the default, random and exhaustive (grid)
architectures of the space, membership, and :meth:`SearchSpace.freeze`, which is the
``derive`` pass.

An architecture is a decisions mapping ``{node: {attr: value}}`` (JSON as it is). The space
lives beside the passes, not in the IR, because freezing a space is a pass.
"""
from __future__ import annotations

import itertools
import random as _random
from math import prod
from typing import Any, Iterator

from autonl.ir import AutonlError, Choice, Graph
from autonl.ir.decisions import Decisions, check_decisions


class SearchSpace:
    """The choices of ``graph`` (a relaxed graph), keyed ``(node, attr)`` in graph order."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.choices: dict[tuple[str, str], Choice] = {
            (n.name, attr): c for n in graph for attr, c in n.choices().items()}

    def __len__(self) -> int:
        return len(self.choices)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.choices)

    def __repr__(self) -> str:
        return f"<SearchSpace of '{self.graph.name}': {len(self)} choices, {self.size()} architectures>"

    def size(self) -> int:
        """How many architectures the space holds (the product of the option counts)."""
        return prod(len(c) for c in self.choices.values())

    @staticmethod
    def _nest(flat: dict[tuple[str, str], Any]) -> Decisions:
        out: Decisions = {}
        for (node, attr), value in flat.items():
            out.setdefault(node, {})[attr] = value
        return out

    def default(self) -> Decisions:
        """Every choice at its first option, as written."""
        return self._nest({k: c.options[0] for k, c in self.choices.items()})

    def random(self, rng: _random.Random | int | None = None) -> Decisions:
        """One architecture drawn uniformly, option by option (``rng``: a Random or a seed)."""
        rng = rng if isinstance(rng, _random.Random) else _random.Random(rng)
        return self._nest({k: rng.choice(c.options) for k, c in self.choices.items()})

    def grid(self, limit: int | None = None) -> Iterator[Decisions]:
        """Every architecture in order (the last choice varies fastest); at most ``limit``."""
        keys = list(self.choices)
        combos = itertools.product(*(self.choices[k].options for k in keys))
        for values in itertools.islice(combos, limit):
            yield self._nest(dict(zip(keys, values)))

    def check(self, decisions: Any, complete: bool = True, source: str = "decisions") -> Decisions:
        """``decisions`` if they fit the space, else one line naming the misfit."""
        return check_decisions(self.graph, decisions, complete, source)

    def contains(self, decisions: Any) -> bool:
        """Whether ``decisions`` decide every choice with one of its options."""
        try:
            self.check(decisions)
        except AutonlError:
            return False
        return True

    def freeze(self, decisions: Decisions) -> Graph:
        """The discrete graph these decisions select: the ``derive`` pass (skipped blocks and
        absent LightNL blocks removed)."""
        from .derive import Derive
        from .manager import PassManager
        return PassManager([Derive(decisions)])(self.graph).graph
