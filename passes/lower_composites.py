"""``lower-composites``: expand composite ops (mbconv, se, lightnl, non_local) into primitives."""
from __future__ import annotations

from typing import Sequence

from autonl.ir import AutonlError, Graph, GraphBuilder
from autonl.ir.ops import all_ops, get_op

from .base import Pass, PassResult
from .pass_registry import register_pass


@register_pass("lower-composites")
class LowerComposites(Pass):
    """Expand composite ops (mbconv, se, lightnl, non_local) into primitives.

    Replace each composite node by its lowering, in place, until none is left (a lowering
    may emit other composites, as mbconv emits se). The new nodes are named
    ``<composite>.<part>`` (``mbconv_3.expand``, ``lightnl_3.kv``) and uses of the composite
    read the lowering's output. ``ops`` limits the rewrite to some composites."""

    def __init__(self, ops: Sequence[str] | None = None):
        composites = sorted(n for n, d in all_ops().items() if d.composite)
        if ops is not None:
            for op in ops:
                if op not in composites:
                    raise AutonlError(f"'{op}' is not a composite op; composites: {', '.join(composites)}")
        self.ops = set(composites if ops is None else ops)

    def _targets(self, graph: Graph) -> list[str]:
        return [n.name for n in graph if n.op in self.ops]

    def requires(self, graph: Graph) -> None:
        for name in self._targets(graph):
            node = graph.node(name)
            if node.relaxed:
                raise AutonlError(f"node %{name} ({node.op}) still has choices "
                                  f"{sorted(node.choices())}; derive the graph before lowering it")

    def call(self, graph: Graph) -> PassResult:
        modified = False
        while targets := self._targets(graph):
            lowered = {}
            for name in targets:     # every composite of this round, spliced in one pass (linear)
                node = graph.nodes[name]
                op = get_op(node.op)
                b = GraphBuilder(graph, prefix=f"{name}.", pending=True)
                out = op.lower(b, node.inputs, op.full_attrs(node.attrs))
                lowered[name] = (b.new_nodes, out)
            graph.splice_many(lowered)
            modified = True
        return PassResult(graph, modified)

    def ensures(self, graph: Graph) -> None:
        left = self._targets(graph)
        if left:
            raise AutonlError(f"composite nodes remain: {', '.join('%' + n for n in left)}")
