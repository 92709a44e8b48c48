"""``Graph`` and ``Node``: the editable IR.

A graph has named inputs, an ordered collection of nodes and a list of outputs. Each
node computes one value, named like the node (``%conv2d_3``), from the values its
``inputs`` name. Topology questions (order, cycles, reachability, DOT) go to networkx.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx

from .choice import Choice
from .errors import AutonlError, VerifyError
from .types import TensorType

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


@dataclass
class Node:
    """One operation. ``attrs`` holds only what was set explicitly; the op supplies defaults."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    type: TensorType | None = None
    # Where the node was read from, for error messages; not part of the node's identity.
    line: int | None = field(default=None, compare=False, repr=False)
    column: int | None = field(default=None, compare=False, repr=False)

    @property
    def relaxed(self) -> bool:
        return any(isinstance(v, Choice) for v in self.attrs.values())

    def choices(self) -> dict[str, Choice]:
        return {k: v for k, v in self.attrs.items() if isinstance(v, Choice)}


class Graph:
    """A dataflow graph of :class:`Node` objects (see the module docstring)."""

    def __init__(self, name: str = "main", inputs: dict[str, TensorType] | None = None,
                 nodes: Iterable[Node] = (), outputs: Iterable[str] = ()):
        self.name = name
        self.inputs: dict[str, TensorType] = dict(inputs or {})
        self.nodes: dict[str, Node] = {}
        for n in nodes:
            if n.name in self.nodes:
                raise VerifyError("the name is defined twice", n.name, n.op)
            self.nodes[n.name] = n
        self.outputs: list[str] = list(outputs)
        # The file the graph was read from, for error messages; not part of its identity.
        self.source: str | None = None
        # Bound weights (numpy arrays) keyed like the torch backend's state dict,
        # ``<node>.<tensor>`` (``mbconv_3.expand.weight``). Empty unless a backend bound
        # them (backends.deploy.bind_params); passes that rewrite weights (fold-bn) read and
        # write them. Not part of the graph's identity and not in its text or JSON form:
        # model folders keep weights in weights.pt.
        self.params: dict = {}

    # -- identity ------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Graph) and self.name == other.name
                and self.inputs == other.inputs and self.outputs == other.outputs
                and list(self.nodes.values()) == list(other.nodes.values()))

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"

    def __str__(self) -> str:
        from .text_form import print_graph
        return print_graph(self)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes.values()))

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: str) -> bool:
        return name in self.nodes or name in self.inputs

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    # -- lookup --------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise AutonlError(f"graph '{self.name}' has no node %{name}") from None

    def type_of(self, value: str) -> TensorType:
        if value in self.inputs:
            return self.inputs[value]
        t = self.node(value).type
        if t is None:
            raise AutonlError(f"node %{value} has no type yet; run the shape-inference pass")
        return t

    def users(self, value: str) -> list[Node]:
        return [n for n in self.nodes.values() if value in n.inputs]

    @property
    def relaxed(self) -> bool:
        return any(n.relaxed for n in self.nodes.values())

    def fresh_name(self, base: str) -> str:
        """``base`` if unused, else ``base_1``, ``base_2``, ... (torch.fx's naming)."""
        base = re.sub(r"[^A-Za-z0-9_.]", "_", base) or "v"
        if not NAME_RE.match(base):
            base = "v_" + base
        if base not in self:
            return base
        stem, i = base, 1
        m = re.match(r"(.*)_(\d+)\Z", base)
        if m:
            stem, i = m.group(1), int(m.group(2)) + 1
        while f"{stem}_{i}" in self:
            i += 1
        return f"{stem}_{i}"

    # -- editing -------------------------------------------------------------------
    def add_node(self, op: str, inputs: Iterable[str], attrs: dict[str, Any] | None = None,
                 name: str | None = None, type: TensorType | None = None,
                 before: str | None = None) -> Node:
        """Add a node (at the end, or just before node ``before``) and return it."""
        name = name or self.fresh_name(op)
        if name in self:
            raise AutonlError(f"graph '{self.name}' already defines %{name}")
        node = Node(name, op, list(inputs), dict(attrs or {}), type)
        if before is None:
            self.nodes[name] = node
        else:
            self._insert_before(before, [node])
        return node

    def _insert_before(self, anchor: str, new: list[Node]) -> None:
        self._insert_at(anchor, new, after=False)

    def insert_after(self, anchor: str, new: list[Node]) -> None:
        """Store ``new`` nodes right after node ``anchor`` (order only; wiring is the caller's)."""
        self._insert_at(anchor, new, after=True)

    def _insert_at(self, anchor: str, new: list[Node], after: bool) -> None:
        self.node(anchor)
        for n in new:
            if n.name in self:
                raise AutonlError(f"graph '{self.name}' already defines %{n.name}")
        items = []
        for k, v in self.nodes.items():
            if k == anchor and not after:
                items.extend((n.name, n) for n in new)
            items.append((k, v))
            if k == anchor and after:
                items.extend((n.name, n) for n in new)
        self.nodes = dict(items)

    def remove_node(self, name: str) -> None:
        users = [n.name for n in self.users(name)]
        if users or name in self.outputs:
            where = ", ".join("%" + u for u in users) or "the graph outputs"
            raise AutonlError(f"cannot remove %{name}: it is still used by {where}")
        del self.nodes[name]

    def replace_all_uses(self, old: str, new: str) -> int:
        """Point every use of value ``old`` (node inputs and graph outputs) at ``new``."""
        count = 0
        for n in self.nodes.values():
            for i, v in enumerate(n.inputs):
                if v == old:
                    n.inputs[i] = new
                    count += 1
        for i, v in enumerate(self.outputs):
            if v == old:
                self.outputs[i] = new
                count += 1
        return count

    def splice(self, name: str, new_nodes: list[Node], output: str) -> None:
        """Replace node ``name`` by ``new_nodes`` at its position; uses of it now read ``output``."""
        self._insert_before(name, new_nodes)
        del self.nodes[name]
        self.replace_all_uses(name, output)

    # -- topology (networkx) -------------------------------------------------------
    def to_networkx(self) -> nx.MultiDiGraph:
        """Values as vertices (graph inputs and nodes), one edge per use keyed by input position."""
        g = nx.MultiDiGraph(name=self.name)
        for v, t in self.inputs.items():
            g.add_node(v, kind="input", op="input", type=t)
        for n in self.nodes.values():
            g.add_node(n.name, kind="node", op=n.op, type=n.type)
        for n in self.nodes.values():
            for i, v in enumerate(n.inputs):
                if v in g:
                    g.add_edge(v, n.name, key=i, index=i)
        return g

    def find_cycle(self) -> list[str] | None:
        """The nodes of one cycle, or None if the graph is acyclic."""
        try:
            edges = nx.find_cycle(self.to_networkx())
        except nx.NetworkXNoCycle:
            return None
        return [e[0] for e in edges]

    def topological_order(self) -> list[str]:
        """Node names in an order where inputs come first; ties keep the stored order."""
        g = self.to_networkx()
        pos = {v: i for i, v in enumerate([*self.inputs, *self.nodes])}
        try:
            order = list(nx.lexicographical_topological_sort(g, key=pos.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = self.find_cycle() or []
            raise VerifyError("is part of a cycle: " + " -> ".join("%" + c for c in cycle + cycle[:1]),
                              cycle[0] if cycle else None) from None
        return [v for v in order if v in self.nodes]

    def sort(self) -> bool:
        """Store nodes in topological order; return whether the order changed."""
        order = self.topological_order()
        changed = order != list(self.nodes)
        self.nodes = {k: self.nodes[k] for k in order}
        return changed

    def live_nodes(self) -> set[str]:
        """Nodes that some graph output depends on."""
        g = self.to_networkx()
        live: set[str] = set()
        for out in self.outputs:
            if out in g:
                live.add(out)
                live |= nx.ancestors(g, out)
        return live & set(self.nodes)

    def to_dot(self) -> str:
        """Graphviz DOT text, one box per value labelled with name, op and type."""
        g = nx.MultiDiGraph(name=self.name)
        for v, t in self.inputs.items():
            g.add_node(v, label=f'"%{v}\\n{t}"', shape="ellipse")
        for n in self.nodes.values():
            attrs = ", ".join(f"{k}={_short(v)}" for k, v in n.attrs.items())
            label = f"%{n.name}\\n{n.op}" + (f"({attrs})" if attrs else "") + f"\\n{n.type or '?'}"
            g.add_node(n.name, label=f'"{label}"', shape="box",
                       style='"rounded,filled"', fillcolor='"#fde2b8"' if n.relaxed else '"#e8eef7"')
        for n in self.nodes.values():
            for i, v in enumerate(n.inputs):
                g.add_edge(v, n.name, key=i)
        for i, out in enumerate(self.outputs):
            g.add_node(f"output_{i}", label=f'"output {i}"', shape="ellipse")
            g.add_edge(out, f"output_{i}")
        return nx.nx_pydot.to_pydot(g).to_string()


def _short(v: Any) -> str:
    if isinstance(v, Choice):
        return "{" + "|".join(_short(o) for o in v.options) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).replace('"', "'")
