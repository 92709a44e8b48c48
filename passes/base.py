"""The pass interface: ``requires`` -> ``call`` -> ``ensures``, returning a ``PassResult``.

Modelled on onnx-ir's pass infrastructure:

- a failing precondition or postcondition is re-raised as :class:`PreconditionError` /
  :class:`PostconditionError` naming the pass and the cause;
- a pass declares whether it is *in place* (``in_place = True``: it edits the graph it is
  given and returns that same graph) or *functional* (``in_place = False``: it leaves its
  input alone and returns a new graph); the contract is checked on every call;
- ``modified`` is true only when the pass changed something;
- a pass that rewrites weights says so (``uses_weights = True``); it is then called as
  ``call(graph, weights)`` with the model's weights (``{"<node>.<tensor>": array}``) and
  returns them in ``PassResult.weights``. Weight arrays are replaced, never written into.

A custom pass is a subclass with ``call``, registered by name (see :mod:`autonl.passes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autonl.ir import AutonlError, Graph

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class PassResult:
    """The graph after a pass, whether the pass changed anything, the weights of a pass that
    rewrites them, and what an analysis pass found (``analysis``, e.g. a cost report)."""

    graph: Graph
    modified: bool
    weights: Weights | None = None
    analysis: Any = None


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
    uses_weights: ClassVar[bool] = False

    def requires(self, graph: Graph) -> None:
        """Raise an :class:`AutonlError` if the pass cannot run on ``graph``."""

    def ensures(self, graph: Graph) -> None:
        """Raise an :class:`AutonlError` if the pass's promise does not hold on ``graph``."""

    def call(self, graph: Graph, *weights: Weights) -> PassResult:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    def __call__(self, graph: Graph, weights: Weights | None = None) -> PassResult:
        """Run the pass with its contract checked. A weight-rewriting pass gets ``weights``
        (none given: an empty mapping, which its ``requires`` may refuse)."""
        try:
            self.requires(graph, weights if weights is not None else {}) if self.uses_weights \
                else self.requires(graph)
        except AutonlError as e:
            raise PreconditionError(f"pass '{self.label}' cannot run: {e}") from e
        result = self.call(graph, weights if weights is not None else {}) if self.uses_weights \
            else self.call(graph)
        if not isinstance(result, PassResult):
            raise PassError(f"pass '{self.label}' returned {type(result).__name__}, not a PassResult")
        if self.in_place and result.graph is not graph:
            raise PassError(f"pass '{self.label}' is declared in place but returned a new graph; "
                            "return the graph it was given, or declare in_place = False")
        if not self.in_place and result.graph is graph:
            raise PassError(f"pass '{self.label}' is declared functional but returned the graph it was "
                            "given; return a new graph, or declare in_place = True")
        try:
            self.ensures(result.graph)
        except AutonlError as e:
            raise PostconditionError(f"pass '{self.label}' broke its promise: {e}") from e
        return result

    def __repr__(self) -> str:
        return f"<pass {self.label}>"
