"""Per-node cost from shapes alone, including relaxed nodes (cheapest and dearest option)."""
from __future__ import annotations

from typing import Any

from .choice import attr_combinations
from .graph import Graph, Node
from .ops.op_registry import Cost, get_op


def node_cost(graph: Graph, node: Node, attrs: dict[str, Any] | None = None) -> Cost:
    """Cost of a discrete node, or of ``node`` with ``attrs`` in place of its own."""
    op = get_op(node.op)
    full = op.full_attrs(node.attrs if attrs is None else attrs)
    return op.cost([graph.type_of(v) for v in node.inputs], graph.type_of(node.name), full)


def node_cost_range(graph: Graph, node: Node) -> tuple[Cost, Cost]:
    """(cheapest, dearest) cost over the node's choices, ordered by MACs then parameters."""
    if not node.relaxed:
        cost = node_cost(graph, node)
        return cost, cost
    costs = [node_cost(graph, node, a) for a in attr_combinations(node.attrs)]
    key = lambda c: (c.macs, c.params)  # noqa: E731
    return min(costs, key=key), max(costs, key=key)


def format_count(n: float) -> str:
    """3 significant digits with a K/M/G suffix: 10.8M, 864, 1.23G."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{suffix}" if v < 1000 else f"{v:.0f}{suffix}"
    return f"{n:g}"
