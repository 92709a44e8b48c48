"""``Graph`` and ``Node``: the editable IR.

A graph has named inputs, an ordered collection of nodes and a list of outputs. Each
node computes one value, named like the node (``%conv2d_3``), from the values its
``inputs`` name. The order and liveness that every load, cost and print needs are walks over
the users index, linear in the graph (they give what networkx's lexicographical topological
sort and ancestors give, without building a networkx graph each time); naming a cycle, DOT and
:meth:`Graph.to_networkx` for other questions go to networkx.

Editing follows torch.fx: :meth:`Graph.replace_all_uses_with`, :meth:`Graph.erase_node`
(refuses a node that is still used), :meth:`Graph.set_inputs`, :meth:`Graph.insert_after`.
The graph keeps an index of every value's users up to date through these and through
``graph.nodes[name] = node`` / ``del graph.nodes[name]``, so :meth:`Graph.users` costs
O(users), not a scan of the graph. A node's ``inputs`` list cannot be edited in place
(assign a new list, or use the graph's methods), so the index cannot go stale.
"""
from __future__ import annotations

import heapq
import re
from typing import Any, Iterable, Iterator

import networkx as nx

from .choice import Choice
from .errors import AutonlError, VerifyError
from .types import TensorType

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


class _Inputs(list):
    """A node's input names: a list for reading and comparing, read-only for editing."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a node's inputs cannot be edited in place: assign node.inputs = [...] "
                        "or use Graph.set_inputs / Graph.replace_all_uses_with")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce_ex__(self, protocol):
        return (list, (list(self),))


class Node:
    """One operation. ``attrs`` holds only what was set explicitly; the op supplies defaults.

    ``line``/``column`` say where the node was read from, for error messages; they are not
    part of the node's identity (nor is the graph it belongs to)."""

    __slots__ = ("name", "op", "_inputs", "attrs", "type", "line", "column", "_graph")

    def __init__(self, name: str, op: str, inputs: Iterable[str], attrs: dict[str, Any] | None = None,
                 type: TensorType | None = None, line: int | None = None, column: int | None = None):
        self.name = name
        self.op = op
        self._inputs = _Inputs(inputs)
        self.attrs = dict(attrs or {})
        self.type = type
        self.line = line
        self.column = column
        self._graph: Graph | None = None

    @property
    def inputs(self) -> list[str]:
        return self._inputs

    @inputs.setter
    def inputs(self, values: Iterable[str]) -> None:
        new = _Inputs(values)
        if self._graph is not None:
            self._graph._unlink(self)
            self._inputs = new
            self._graph._link(self)
        else:
            self._inputs = new

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Node) and self.name == other.name and self.op == other.op
                and list(self._inputs) == list(other._inputs) and self.attrs == other.attrs
                and self.type == other.type)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (f"Node(name={self.name!r}, op={self.op!r}, inputs={list(self._inputs)!r}, "
                f"attrs={self.attrs!r}, type={self.type!r})")

    def detached_copy(self) -> "Node":
        """A copy that belongs to no graph (attributes copied one level: values are immutable)."""
        return Node(self.name, self.op, list(self._inputs), dict(self.attrs), self.type, self.line, self.column)

    def __deepcopy__(self, memo) -> "Node":
        return self.detached_copy()

    @property
    def relaxed(self) -> bool:
        return any(isinstance(v, Choice) for v in self.attrs.values())

    def choices(self) -> dict[str, Choice]:
        return {k: v for k, v in self.attrs.items() if isinstance(v, Choice)}


class _NodeTable(dict):
    """``graph.nodes``: an ordered ``{name: Node}`` that keeps the graph's users index."""

    def __init__(self, graph: "Graph"):
        super().__init__()
        self._graph = graph

    def __setitem__(self, name: str, node: Node) -> None:
        if node.name != name:
            raise AutonlError(f"node %{node.name} stored under the name %{name}")
        if node._graph is not None and node._graph is not self._graph:
            raise AutonlError(f"node %{name} already belongs to graph '{node._graph.name}'")
        old = self.get(name)
        if old is not None and old is not node:
            self._graph._detach(old)
        super().__setitem__(name, node)
        if node._graph is None:
            node._graph = self._graph
            self._graph._link(node)

    def __delitem__(self, name: str) -> None:
        node = self[name]
        super().__delitem__(name)
        self._graph._detach(node)

    def pop(self, name: str, *default):
        if name not in self:
            if default:
                return default[0]
            raise KeyError(name)
        node = self[name]
        del self[name]
        return node

    def _refuse(self, *args, **kwargs):
        raise TypeError("edit graph.nodes one node at a time, or through the Graph's methods")

    popitem = clear = update = setdefault = _refuse


class Graph:
    """A dataflow graph of :class:`Node` objects (see the module docstring)."""

    def __init__(self, name: str = "main", inputs: dict[str, TensorType] | None = None,
                 nodes: Iterable[Node] = (), outputs: Iterable[str] = ()):
        self.name = name
        self.inputs: dict[str, TensorType] = dict(inputs or {})
        self._users: dict[str, dict[str, None]] = {}
        self._nodes = _NodeTable(self)
        for n in nodes:
            if n.name in self._nodes:
                raise VerifyError("the name is defined twice", n.name, n.op)
            self._nodes[n.name] = n
        self.outputs: list[str] = list(outputs)
        # The file the graph was read from, for error messages; not part of its identity.
        self.source: str | None = None

    # -- identity ------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Graph) and self.name == other.name
                and self.inputs == other.inputs and self.outputs == other.outputs
                and list(self.nodes.values()) == list(other.nodes.values()))

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._nodes or name in self.inputs

    def copy(self) -> "Graph":
        """An independent copy (nodes copied; types and attribute values are immutable)."""
        out = Graph(self.name, self.inputs, (n.detached_copy() for n in self._nodes.values()), self.outputs)
        out.source = self.source
        return out

    def __deepcopy__(self, memo) -> "Graph":
        return self.copy()

    def __reduce__(self):
        """Pickle as its parts (the node table and users index are rebuilt on load)."""
        nodes = [(n.name, n.op, list(n.inputs), n.attrs, n.type, n.line, n.column) for n in self._nodes.values()]
        return _rebuild_graph, (self.name, self.inputs, nodes, self.outputs, self.source)

    # -- the node table and its users index ------------------------------------------
    @property
    def nodes(self) -> dict[str, Node]:
        """``{name: Node}`` in stored order; ``graph.nodes[name] = node`` and ``del graph.nodes[name]``
        keep the users index (prefer the editing methods below)."""
        return self._nodes

    @nodes.setter
    def nodes(self, table: dict[str, Node]) -> None:
        keep = {n.name for n in table.values()}
        for name in [k for k in self._nodes if k not in keep]:
            del self._nodes[name]
        self._reorder([n.name for n in table.values()], list(table.values()))

    def _reorder(self, order: list[str], nodes: list[Node] | None = None) -> None:
        """Store the nodes in ``order`` (every current node once, plus any new ``nodes``)."""
        by_name = dict(self._nodes)
        for n in nodes or ():
            by_name.setdefault(n.name, n)
        if len(order) != len(by_name) or set(order) != set(by_name):
            raise AutonlError(f"graph '{self.name}': a reorder must list every node once")
        dict.clear(self._nodes)
        for name in order:
            node = by_name[name]
            dict.__setitem__(self._nodes, name, node)
            if node._graph is None:
                node._graph = self
                self._link(node)

    def _link(self, node: Node) -> None:
        for v in dict.fromkeys(node.inputs):
            self._users.setdefault(v, {})[node.name] = None

    def _unlink(self, node: Node) -> None:
        for v in dict.fromkeys(node.inputs):
            users = self._users.get(v)
            if users is not None:
                users.pop(node.name, None)
                if not users:
                    del self._users[v]

    def _detach(self, node: Node) -> None:
        self._unlink(node)
        node._graph = None

    # -- lookup --------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
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
        """The nodes that read ``value`` (each once), from the index: O(users)."""
        return [self._nodes[n] for n in self._users.get(value, ())]

    @property
    def relaxed(self) -> bool:
        return any(n.relaxed for n in self._nodes.values())

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
                 before: str | None = None, after: str | None = None) -> Node:
        """Add a node (at the end, or just before or after an existing node) and return it."""
        name = name or self.fresh_name(op)
        if name in self:
            raise AutonlError(f"graph '{self.name}' already defines %{name}")
        node = Node(name, op, list(inputs), dict(attrs or {}), type)
        if before is None and after is None:
            self._nodes[name] = node
        else:
            self._insert_at(after if after is not None else before, [node], after=after is not None)
        return node

    def insert_before(self, anchor: str, new: list[Node]) -> None:
        """Store ``new`` nodes right before node ``anchor`` (order only; wiring is the caller's)."""
        self._insert_at(anchor, new, after=False)

    def insert_after(self, anchor: str, new: list[Node]) -> None:
        """Store ``new`` nodes right after node ``anchor`` (order only; wiring is the caller's)."""
        self._insert_at(anchor, new, after=True)

    def _insert_at(self, anchor: str, new: list[Node], after: bool) -> None:
        self.node(anchor)
        names = [n.name for n in new]
        for n in new:
            if n.name in self or names.count(n.name) > 1:
                raise AutonlError(f"graph '{self.name}' already defines %{n.name}")
        order: list[str] = []
        for k in self._nodes:
            if k == anchor and not after:
                order.extend(names)
            order.append(k)
            if k == anchor and after:
                order.extend(names)
        self._reorder(order, new)

    def set_inputs(self, name: str, inputs: Iterable[str]) -> None:
        """Rewire node ``name`` to read ``inputs``."""
        self.node(name).inputs = list(inputs)

    def erase_node(self, name: str) -> Node:
        """Remove an unused node and return it; a node that is still read is refused."""
        node = self.node(name)
        users = [n.name for n in self.users(name)]
        if users or name in self.outputs:
            where = ", ".join("%" + u for u in users) or "the graph outputs"
            raise AutonlError(f"cannot remove %{name}: it is still used by {where}")
        del self._nodes[name]
        return node

    remove_node = erase_node

    def replace_all_uses_with(self, old: str, new: str) -> int:
        """Point every use of value ``old`` (node inputs and graph outputs) at ``new``; return
        how many uses changed."""
        if old == new:
            return 0
        count = 0
        for user in self.users(old):
            count += user.inputs.count(old)
            user.inputs = [new if v == old else v for v in user.inputs]
        for i, v in enumerate(self.outputs):
            if v == old:
                self.outputs[i] = new
                count += 1
        return count

    replace_all_uses = replace_all_uses_with

    def splice(self, name: str, new_nodes: list[Node], output: str) -> None:
        """Replace node ``name`` by ``new_nodes`` at its position; uses of it now read ``output``."""
        self.splice_many({name: (new_nodes, output)})

    def splice_many(self, replacements: dict[str, tuple[list[Node], str]]) -> None:
        """:meth:`splice` for many nodes at once, ``{name: (new_nodes, output)}``, in one pass
        over the node order (a splice at a time reorders the whole graph each time: quadratic
        in the graph's size when a pass rewrites every block)."""
        for name in replacements:
            self.node(name)
        new = [n for nodes, _ in replacements.values() for n in nodes]
        seen: set[str] = set()
        for n in new:
            if n.name in self._nodes or n.name in seen:
                raise AutonlError(f"graph '{self.name}' already defines %{n.name}")
            seen.add(n.name)
        order: list[str] = []
        for k in self._nodes:
            if k in replacements:
                order.extend(n.name for n in replacements[k][0])
            order.append(k)
        self._reorder(order, new)
        for name, (_, output) in replacements.items():
            self.replace_all_uses_with(name, output)
        for name in replacements:
            self.erase_node(name)

    def eliminate_dead_code(self) -> list[str]:
        """Remove the nodes that no graph output depends on; return their names."""
        live = self.live_nodes()
        dead = [name for name in self._nodes if name not in live]
        for name in dead:
            del self._nodes[name]
        return dead

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
        if self._stored_or_topological_order() is not None:
            return None
        try:
            edges = nx.find_cycle(self.to_networkx())
        except nx.NetworkXNoCycle:  # pragma: no cover - the order above found a cycle
            return None
        return [e[0] for e in edges]

    def topological_order(self) -> list[str]:
        """Node names in an order where inputs come first; ties keep the stored order."""
        order = self._stored_or_topological_order()
        if order is None:
            cycle = self.find_cycle() or []
            raise VerifyError("is part of a cycle: " + " -> ".join("%" + c for c in cycle + cycle[:1]),
                              cycle[0] if cycle else None)
        return order

    def _stored_or_topological_order(self) -> list[str] | None:
        """What ``nx.lexicographical_topological_sort`` of :meth:`to_networkx` gives with the stored
        position as the key (node names only), or None if there is a cycle; O(N log N), and O(N)
        when the stored order already is topological (as in every file autonl writes).

        Kahn's algorithm over the users index, taking the ready value stored first each time,
        without building a networkx graph (which costs far more than the sort)."""
        values = [*self.inputs, *self._nodes]
        pos = {v: i for i, v in enumerate(values)}
        nodes = self._nodes
        first = len(self.inputs)
        if len(pos) == len(values) and all(pos[v] < i for i, n in enumerate(nodes.values(), first)
                                           for v in n.inputs if v in pos):
            return list(nodes)
        # Vertices are the distinct names (an input shadowed by a node takes the node's place).
        names = [None] * len(values)
        for v, i in pos.items():
            names[i] = v
        waiting = [0] * len(values)  # distinct defined values each vertex still waits for
        for name, node in nodes.items():
            waiting[pos[name]] = sum(1 for v in dict.fromkeys(node.inputs) if v in pos)
        ready = [i for i, v in enumerate(names) if v is not None and not waiting[i]]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            v = names[heapq.heappop(ready)]
            if v in nodes:
                order.append(v)
            for user in self._users.get(v, ()):
                i = pos[user]
                waiting[i] -= 1
                if not waiting[i]:
                    heapq.heappush(ready, i)
        return order if len(order) == len(nodes) else None

    def sort(self) -> bool:
        """Store nodes in topological order; return whether the order changed."""
        order = self.topological_order()
        changed = order != list(self.nodes)
        self.nodes = {k: self.nodes[k] for k in order}
        return changed

    def live_nodes(self) -> set[str]:
        """Nodes that some graph output depends on (one walk back from all outputs at once)."""
        nodes, inputs = self._nodes, self.inputs
        seen = {v for v in self.outputs if v in nodes or v in inputs}
        todo = list(seen)
        while todo:
            node = nodes.get(todo.pop())
            if node is None:
                continue
            for v in node.inputs:
                if v not in seen and (v in nodes or v in inputs):
                    seen.add(v)
                    todo.append(v)
        return seen & nodes.keys()

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


def _rebuild_graph(name, inputs, nodes, outputs, source) -> Graph:
    graph = Graph(name, inputs, (Node(*n) for n in nodes), outputs)
    graph.source = source
    return graph


def _short(v: Any) -> str:
    if isinstance(v, Choice):
        return "{" + "|".join(_short(o) for o in v.options) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).replace('"', "'")
