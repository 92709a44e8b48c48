"""``cost``: MACs and parameters per node and in total, from shapes alone.

Counted (method.md): convolutions, linear layers and matrix products (LightNL's in its
cheaper order); batch norm, activations, additions and pooling cost no MACs. For a relaxed
graph every figure is a range: the cheapest and the dearest option of each node (choices
are node-local, so the totals are the smallest and the largest reachable network).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from autonl.ir import Graph, node_cost_range
from autonl.ir.node_cost import format_count

from .base import Pass, PassResult
from .pass_registry import register_pass


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    type: str
    macs: int
    params: int
    lightnl_macs: int
    macs_max: int
    params_max: int
    lightnl_macs_max: int
    relaxed: bool


@dataclass
class CostReport:
    graph: str
    input_types: dict[str, str]
    relaxed: bool
    nodes: list[NodeCost] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(getattr(n, key) for n in self.nodes)

    @property
    def macs(self) -> int:
        return self.total("macs")

    @property
    def params(self) -> int:
        return self.total("params")

    @property
    def lightnl_macs(self) -> int:
        return self.total("lightnl_macs")

    def to_json(self, per_node: bool = True) -> dict:
        """``macs``/``params``/``lightnl_macs`` (for a relaxed graph: of the smallest network,
        with ``*_max`` for the largest), then per-node rows."""
        out = {"graph": self.graph, "inputs": self.input_types, "relaxed": self.relaxed,
               "macs": self.macs, "params": self.params, "lightnl_macs": self.lightnl_macs}
        if self.relaxed:
            for key in ("macs", "params", "lightnl_macs"):
                out[f"{key}_max"] = self.total(f"{key}_max")
        if per_node:
            out["nodes"] = [_node_json(n, self.relaxed) for n in self.nodes]
        return out

    def table(self) -> str:
        """A per-block table: one row per node that has MACs or parameters."""
        def fig(lo: int, hi: int) -> str:
            return format_count(lo) if lo == hi else f"{format_count(lo)}..{format_count(hi)}"

        total_macs = self.total("macs_max") or 1
        rows = [(n.name, n.op, n.type, fig(n.macs, n.macs_max), fig(n.params, n.params_max),
                 fig(n.lightnl_macs, n.lightnl_macs_max) if n.lightnl_macs_max else "",
                 f"{100 * n.macs_max / total_macs:.1f}%")
                for n in self.nodes if n.macs_max or n.params_max]
        rows.append(("total", "", "", fig(self.macs, self.total("macs_max")),
                     fig(self.params, self.total("params_max")),
                     fig(self.lightnl_macs, self.total("lightnl_macs_max")), "100.0%"))
        head = ("node", "op", "output", "MACs", "params", "LightNL MACs", "share")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        lines = [fmt(head), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(r) for r in rows[:-1]] + [fmt(tuple("-" * w for w in widths)), fmt(rows[-1])]
        return "\n".join(lines)


def _node_json(n: NodeCost, relaxed: bool) -> dict:
    d = asdict(n)
    if not relaxed:
        for key in ("macs_max", "params_max", "lightnl_macs_max", "relaxed"):
            d.pop(key)
    return d


def analyze_cost(graph: Graph) -> CostReport:
    report = CostReport(graph.name, {k: str(t) for k, t in graph.inputs.items()}, graph.relaxed)
    for name in graph.topological_order():
        node = graph.nodes[name]
        lo, hi = node_cost_range(graph, node)
        report.nodes.append(NodeCost(node.name, node.op, str(node.type), lo.macs, lo.params,
                                     lo.lightnl_macs, hi.macs, hi.params, hi.lightnl_macs, node.relaxed))
    return report


@register_pass("cost")
class CostAnalysis(Pass):
    """Cost analysis: MACs and parameters per node and in total (graph unchanged).

    The :class:`CostReport` is the result's ``analysis``."""

    def call(self, graph: Graph) -> PassResult:
        return PassResult(graph, False, analysis=analyze_cost(graph))
