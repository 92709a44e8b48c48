"""A readable structural diff of two graphs, nodes matched by name."""
from __future__ import annotations

from .graph import Graph
from .ops.registry import get_op
from .text_form import format_attrs, format_value


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
