"""``derive``: collapse a relaxed graph into a discrete one by decisions (method.md section 4)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from autonl.ir import AutonlError, Graph
from autonl.ir.ops import get_op
from autonl.ir.decisions import apply_decisions, check_decisions, load_decisions

from .base import Pass, PassResult
from .pass_registry import register_pass


def residual_add(graph: Graph, block: str) -> str | None:
    """The ``add`` that closes ``block``'s identity residual: ``add(branch, x)`` where the branch
    runs from ``block`` through LightNL nodes and ``x`` is the block's input."""
    x = graph.nodes[block].inputs[0]
    value = block
    while True:
        users = graph.users(value)
        adds = [u for u in users if u.op == "add" and x in u.inputs and value in u.inputs]
        if adds:
            return adds[0].name
        nls = [u for u in users if u.op == "lightnl"]
        if len(nls) != 1:
            return None
        value = nls[0].name


@register_pass("derive")
class Derive(Pass):
    """Apply decisions, then collapse what they switch off.

    Rewrite cases: each choice becomes its decided value; an ``mbconv`` with ``skip=true``
    is removed with the LightNL blocks and the residual ``add`` of its branch (uses of the
    add read the block's input); a ``lightnl`` with ``insert=false`` is removed (uses read
    its input); the now-default ``skip=false``/``insert=true`` attributes are dropped; dead
    code goes. Kernel, expansion, ratio and stride keep their decided values."""

    in_place = False

    def __init__(self, decisions: dict[str, dict[str, Any]] | str | None = None):
        if decisions is None:
            raise AutonlError("derive needs decisions: derive{decisions=\"decisions.json\"} or a mapping")
        self.source = str(decisions) if isinstance(decisions, (str, Path)) else "decisions"
        self.decisions = load_decisions(decisions) if isinstance(decisions, (str, Path)) else decisions

    def requires(self, graph: Graph) -> None:
        check_decisions(graph, self.decisions, complete=True, source=self.source)

    def call(self, graph: Graph) -> PassResult:
        g = apply_decisions(graph, self.decisions)
        modified = graph.relaxed
        for node in list(g):
            if node.op == "mbconv" and node.attrs.get("skip") is True:
                add = residual_add(g, node.name)
                if add is None:
                    raise AutonlError(f"node %{node.name}: skipped, but no residual addition closes its branch")
                g.replace_all_uses_with(add, node.inputs[0])
        for node in list(g):
            if node.op == "lightnl" and node.attrs.get("insert") is False:
                g.replace_all_uses_with(node.name, node.inputs[0])
        modified = bool(g.eliminate_dead_code()) or modified
        for node in g:
            if node.op in ("mbconv", "lightnl"):
                compact = get_op(node.op).without_defaults(node.attrs, ("skip", "insert"))
                modified = modified or compact != node.attrs
                node.attrs = compact
        return PassResult(g, modified)

    def ensures(self, graph: Graph) -> None:
        if graph.relaxed:
            left = [f"%{n.name}" for n in graph if n.relaxed]
            raise AutonlError(f"choices remain after derive: {', '.join(left[:5])}")
