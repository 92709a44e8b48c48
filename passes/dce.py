"""``dce``: dead-code elimination."""
from __future__ import annotations

from autonl.ir import Graph

from .base import Pass, PassResult
from .pass_registry import register_pass


@register_pass("dce")
class DeadCodeElimination(Pass):
    """Dead-code elimination: remove nodes that no graph output depends on.

    Reachability comes from networkx. Graph inputs stay, used or not: they are the signature."""

    def call(self, graph: Graph) -> PassResult:
        return PassResult(graph, bool(graph.eliminate_dead_code()))
