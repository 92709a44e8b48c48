"""Comparing graphs: structurally (up to node names, networkx isomorphism) and as a readable
diff of nodes matched by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from .errors import AutonlError
from .graph import Graph
from .ops.op_registry import get_op
from .text_form import format_attrs, format_value, print_graph


def _full_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    try:
        return get_op(op).full_attrs(attrs)
    except AutonlError:
        return dict(attrs)


@dataclass(frozen=True)
class Comparison:
    """The answer of :func:`structural_equal`: true when the graphs agree; otherwise
    ``differences`` says what differs, nodes matched by name (:func:`diff_graphs`)."""

    equal: bool
    differences: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.equal

    def __str__(self) -> str:
        if self.equal:
            return "the graphs are structurally equal"
        return "\n".join(self.differences) or "the graphs differ only in how they are wired"


def structural_equal(a: Graph, b: Graph) -> Comparison:
    """Same computation up to node names: ops, attributes (defaults filled in), types and
    wiring, compared as labelled graphs with networkx's isomorphism test. The result is
    truthy when they agree and says what differs when they do not."""
    equal = _isomorphic(a, b)
    return Comparison(True) if equal else Comparison(False, tuple(diff_graphs(a, b)))


def assert_structural_equal(actual: Graph, expected: Graph) -> None:
    """For Before/Expected pass tests: an AssertionError with the diff and the actual graph."""
    result = structural_equal(expected, actual)
    if not result:
        raise AssertionError(f"graphs differ (- expected, + actual):\n{result}\n\nactual graph:\n"
                             f"{print_graph(actual, costs=False)}")


def _isomorphic(a: Graph, b: Graph) -> bool:
    def labelled(g: Graph) -> nx.MultiDiGraph:
        h = g.to_networkx()
        input_pos = {v: i for i, v in enumerate(g.inputs)}
        for v in h.nodes:
            d = h.nodes[v]
            d["label"] = (("input", input_pos[v], str(d["type"])) if d["kind"] == "input"
                          else (d["op"], repr(_full_attrs(d["op"], g.nodes[v].attrs)), str(d["type"])))
        for i, out in enumerate(g.outputs):
            h.add_node(("output", i), label=("output", i))
            h.add_edge(out, ("output", i), key=0, index=0)
        return h

    if len(a.nodes) != len(b.nodes) or len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
        return False
    return nx.is_isomorphic(
        labelled(a), labelled(b),
        node_match=lambda x, y: x["label"] == y["label"],
        edge_match=lambda x, y: sorted(e["index"] for e in x.values()) == sorted(e["index"] for e in y.values()))


def _full(node) -> dict:
    try:
        return get_op(node.op).full_attrs(node.attrs)
    except Exception:  # an unknown op still diffs by its written attributes
        return dict(node.attrs)


def diff_graphs(a: Graph, b: Graph) -> list[str]:
    """Lines ``- node``, ``+ node`` and ``~ node: what changed``; empty when the graphs agree."""
    lines = []
    if a.inputs != b.inputs:
        lines.append(f"~ inputs: {', '.join(f'%{k}: {t}' for k, t in a.inputs.items())} -> "
                     f"{', '.join(f'%{k}: {t}' for k, t in b.inputs.items())}")
    for name, node in a.nodes.items():
        if name not in b.nodes:
            attrs = " " + format_attrs(node.attrs) if node.attrs else ""
            lines.append(f"- %{name} = {node.op}({', '.join('%' + v for v in node.inputs)}){attrs}")
            continue
        other = b.nodes[name]
        changes = []
        if node.op != other.op:
            changes.append(f"op {node.op} -> {other.op}")
        if node.inputs != other.inputs:
            changes.append(f"inputs {', '.join('%' + v for v in node.inputs)} -> "
                           f"{', '.join('%' + v for v in other.inputs)}")
        fa, fb = _full(node), _full(other)
        for key in dict.fromkeys([*fa, *fb]):
            if key not in fb:
                changes.append(f"{key} {format_value(fa[key])} -> (none)")
            elif key not in fa:
                changes.append(f"{key} (none) -> {format_value(fb[key])}")
            elif format_value(fa[key]) != format_value(fb[key]):
                changes.append(f"{key} {format_value(fa[key])} -> {format_value(fb[key])}")
        if node.type != other.type:
            changes.append(f"type {node.type} -> {other.type}")
        if changes:
            lines.append(f"~ %{name}: " + "; ".join(changes))
    for name, node in b.nodes.items():
        if name not in a.nodes:
            attrs = " " + format_attrs(node.attrs) if node.attrs else ""
            lines.append(f"+ %{name} = {node.op}({', '.join('%' + v for v in node.inputs)}){attrs}")
    if a.outputs != b.outputs:
        lines.append(f"~ return {', '.join('%' + v for v in a.outputs)} -> {', '.join('%' + v for v in b.outputs)}")
    return lines
