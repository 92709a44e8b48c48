"""``GraphBuilder``: emit typed nodes one call at a time (used by presets and lowerings)."""
from __future__ import annotations

from typing import Any, Sequence

from .errors import TypeInferenceError
from .graph import Graph, Node
from .ops.op_registry import get_op
from .types import TensorType


class GraphBuilder:
    """Creates nodes with their output types inferred on the spot.

    With ``pending=False`` nodes go straight into ``graph``; with ``pending=True`` they are
    collected in :attr:`new_nodes` (a lowering splices them in place of a composite).
    Names are ``prefix + name`` made unique against the graph and the pending nodes.
    """

    def __init__(self, graph: Graph, prefix: str = "", pending: bool = False):
        self.graph = graph
        self.prefix = prefix
        self.pending = pending
        self.new_nodes: list[Node] = []
        self._new_types: dict[str, TensorType] = {}

    def type_of(self, value: str) -> TensorType:
        if value in self._new_types:
            return self._new_types[value]
        return self.graph.type_of(value)

    def _fresh(self, base: str) -> str:
        name = self.graph.fresh_name(base)
        i = 1
        while name in self._new_types or name in self.graph:
            name = f"{base}_{i}"
            i += 1
        return name

    def emit(self, op: str, inputs: Sequence[str], name: str | None = None, **attrs: Any) -> str:
        """Add ``op(inputs) {attrs}`` and return the name of its value."""
        opdef = get_op(op)
        in_types = [self.type_of(v) for v in inputs]
        try:
            out = opdef.infer_all(in_types, attrs)
        except TypeInferenceError as e:
            raise TypeInferenceError(f"building {self.prefix}{name or op} ({op}): {e}") from None
        node = Node(self._fresh(self.prefix + (name or op)), op, list(inputs), attrs, out)
        self._new_types[node.name] = out
        if self.pending:
            self.new_nodes.append(node)
        else:
            self.graph.nodes[node.name] = node
        return node.name
