"""``dce``: dead-code elimination."""
from __future__ import annotations

from autonl.ir import Graph

from .base import Pass, PassResult
from .registry import register_pass


@register_pass("dce")
class DeadCodeElimination(Pass):
    """Dead-code elimination: remove nodes that no graph output depends on.

    Reachability comes from networkx. Graph inputs stay, used or not: they are the signature."""

    def call(self, graph: Graph) -> PassResult:
        live = graph.live_nodes()
        dead = [name for name in graph.nodes if name not in live]
        for name in dead:
            del graph.nodes[name]
        return PassResult(graph, bool(dead))
