"""``fuse-activations``: ``mul(x, sigmoid(x))`` becomes ``silu(x)`` and ``mul(x, hardsigmoid(x))``
becomes ``hardswish(x)`` (either operand order), where the gate has no other user.

Models write swish and hard swish as a product (timm's ``x * torch.sigmoid(x)``,
``x.mul(hard_sigmoid(x))``, a ``h_swish`` module); the IR's mbconv names one activation, so
``fold-mbconv`` finds such blocks only once the product is one node. Exact: the two forms are
the same function. Weights are untouched (activations have none).
"""
from __future__ import annotations

from autonl.ir import Graph

from .base import Pass, PassResult
from .pass_registry import register_pass

FUSED = {"sigmoid": "silu", "hardsigmoid": "hardswish"}


@register_pass("fuse-activations")
class FuseActivations(Pass):
    """x * sigmoid(x) -> silu(x), x * hardsigmoid(x) -> hardswish(x)."""

    def call(self, graph: Graph) -> PassResult:
        fused = 0
        for node in [n for n in graph if n.op == "mul"]:
            a, b = node.inputs
            for x, gate in ((a, b), (b, a)):
                g = graph.nodes.get(gate)
                if g is None or g.op not in FUSED or list(g.inputs) != [x] or gate in graph.outputs \
                        or len(graph.users(gate)) != 1:
                    continue
                node.op, node.inputs, node.attrs = FUSED[g.op], [x], {}
                graph.erase_node(gate)
                fused += 1
                break
        return PassResult(graph, modified=bool(fused))


__all__ = ["FuseActivations"]
