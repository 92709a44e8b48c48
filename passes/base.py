"""The pass interface: ``requires`` -> ``call`` -> ``ensures``, returning a ``PassResult``.

Modelled on onnx-ir's pass infrastructure: a failing precondition or postcondition is
re-raised as :class:`PreconditionError` / :class:`PostconditionError` naming the pass and
the cause. Passes work in place on the graph they are given (``in_place = True``) unless
they say otherwise; :class:`~autonl.passes.manager.PassManager` copies its input once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from autonl.ir import AutonlError, Graph


@dataclass(frozen=True)
class PassResult:
    """The graph after a pass and whether the pass changed anything."""

    graph: Graph
    modified: bool


class PassError(AutonlError):
    """A pass failed; the message names the pass."""


class PreconditionError(PassError):
    pass


class PostconditionError(PassError):
    pass


class Pass:
    """Subclass, set ``name`` (or use ``@register_pass``), and implement :meth:`call`."""

    name: ClassVar[str] = ""
    in_place: ClassVar[bool] = True

    def requires(self, graph: Graph) -> None:
        """Raise an :class:`AutonlError` if the pass cannot run on ``graph``."""

    def ensures(self, graph: Graph) -> None:
        """Raise an :class:`AutonlError` if the pass's promise does not hold on ``graph``."""

    def call(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph) -> PassResult:
        label = self.name or type(self).__name__
        try:
            self.requires(graph)
        except AutonlError as e:
            raise PreconditionError(f"pass '{label}' cannot run: {e}") from e
        result = self.call(graph)
        if not isinstance(result, PassResult):
            raise PassError(f"pass '{label}' returned {type(result).__name__}, not a PassResult")
        try:
            self.ensures(result.graph)
        except AutonlError as e:
            raise PostconditionError(f"pass '{label}' broke its promise: {e}") from e
        return result

    def __repr__(self) -> str:
        return f"<pass {self.name or type(self).__name__}>"
