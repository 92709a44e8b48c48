"""``resize``: the same network at another input resolution."""
from __future__ import annotations

from autonl.ir import AutonlError, Graph
from autonl.ir.verify import infer_types

from .base import Pass, PassResult
from .pass_registry import register_pass


@register_pass("resize")
class Resize(Pass):
    """Set the (single, NCHW) input to ``resolution`` x ``resolution`` and infer every type
    again: the costs of a network at another input size (search at 32, count MACs at 224)."""

    def __init__(self, resolution: int = 224):
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise AutonlError(f"resize: resolution must be a positive integer, got {resolution!r}")
        self.resolution = resolution

    def requires(self, graph: Graph) -> None:
        if len(graph.inputs) != 1:
            raise AutonlError(f"graph '{graph.name}' has {len(graph.inputs)} inputs; resizing needs one")
        name, t = next(iter(graph.inputs.items()))
        if t.rank != 4:
            raise AutonlError(f"graph '{graph.name}': input %{name} is {t}, not an NCHW image")

    def call(self, graph: Graph) -> PassResult:
        name, t = next(iter(graph.inputs.items()))
        new = t.with_shape((*t.shape[:2], self.resolution, self.resolution))
        if new == t:
            return PassResult(graph, False)
        graph.inputs[name] = new
        infer_types(graph)
        return PassResult(graph, True)


def resize_graph(graph: Graph, resolution: int) -> Graph:
    """A copy of ``graph`` at ``resolution`` x ``resolution``, verified."""
    from .manager import PassManager
    return PassManager([Resize(resolution)])(graph).graph
