"""``shape-inference``: recompute every node's output type from its inputs."""
from __future__ import annotations

from autonl.ir import Graph
from autonl.ir.verify import infer_types

from .base import Pass, PassResult
from .pass_registry import register_pass


@register_pass("shape-inference")
class ShapeInference(Pass):
    """Recompute every node's output type from its inputs.

    Rewrite cases: a node without a type gets one; a node whose declared type no longer
    matches its inputs (after an edit, or a change of the graph input) gets the inferred one."""

    def call(self, graph: Graph) -> PassResult:
        return PassResult(graph, infer_types(graph))
