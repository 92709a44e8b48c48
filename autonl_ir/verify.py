"""The verifier: names, ops, attributes, dangling values, cycles, types and shapes.

Each problem raises :class:`VerifyError` naming the node, the problem and the fix,
prefixed with ``FILE:LINE:COL`` when the graph was read from a file.
"""
from __future__ import annotations

import difflib

from .choice import Choice
from .errors import TypeInferenceError, UnknownNameError, VerifyError
from .graph import NAME_RE, Graph, Node
from .ops.op_registry import OpDef, get_op


def _error(graph: Graph, node: Node | None, message: str) -> VerifyError:
    if node is None:
        return VerifyError(message)
    err = VerifyError(message, node.name, node.op)
    if graph.source and node.line is not None:
        err = VerifyError(f"{graph.source}:{node.line}:{node.column}: {err}")
    return err


def _check_attrs(graph: Graph, node: Node, op: OpDef, allow_relaxed: bool) -> None:
    for key, value in node.attrs.items():
        spec = op.attrs.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, op.attrs, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            known = ", ".join(op.attrs) or "(none)"
            raise _error(graph, node, f"unknown attribute '{key}'; {hint}attributes of {op.name}: {known}")
        if isinstance(value, Choice):
            if not allow_relaxed:
                raise _error(graph, node, f"attribute '{key}' is still a choice {list(value.options)}; "
                             "a discrete graph is needed here: derive it first")
            for option in value.options:
                problem = spec.check(option)
                if problem:
                    raise _error(graph, node, f"choice option of attribute '{key}' {problem}")
        else:
            problem = spec.check(value)
            if problem:
                raise _error(graph, node, f"attribute '{key}' {problem}")
    for key, spec in op.attrs.items():
        if spec.required and key not in node.attrs:
            raise _error(graph, node, f"missing required attribute '{key}' ({spec.type}"
                         + (f": {spec.doc})" if spec.doc else ")"))
    discrete_problem = getattr(op, "discrete_problem", None)
    if discrete_problem is not None:
        plain = {k: v for k, v in node.attrs.items() if not isinstance(v, Choice)}
        problem = discrete_problem(op.full_attrs(plain))
        if problem:
            raise _error(graph, node, problem)


def infer_node_type(graph: Graph, node: Node):
    """The node's output type inferred from its inputs; the same for every choice, or an error."""
    try:
        return get_op(node.op).infer_all([graph.type_of(v) for v in node.inputs], node.attrs)
    except TypeInferenceError as e:
        raise _error(graph, node, str(e)) from None


def check_structure(graph: Graph, allow_relaxed: bool = True) -> list[str]:
    """Everything but types: names, ops, arity, attributes, dangling values, outputs, cycles.
    Returns the topological order (:meth:`Graph.topological_order`)."""
    if not NAME_RE.match(graph.name) or "." in graph.name:
        raise VerifyError(f"graph name '{graph.name}' is not an identifier")
    for v in graph.inputs:
        if not NAME_RE.match(v):
            raise VerifyError(f"graph input name '%{v}' is not a valid name")
    for node in graph.nodes.values():
        if not NAME_RE.match(node.name):
            raise _error(graph, node, "the name is not valid: use letters, digits, '_' and '.'")
        try:
            op = get_op(node.op)
        except UnknownNameError as e:
            raise _error(graph, node, str(e)) from None
        if not op.arity_ok(len(node.inputs)):
            raise _error(graph, node, f"{op.name} takes {op.num_inputs} inputs, got {len(node.inputs)}")
        for v in node.inputs:
            if v not in graph:
                close = difflib.get_close_matches(v, list(graph.inputs) + list(graph.nodes), n=1)
                hint = f"; did you mean %{close[0]}?" if close else ""
                raise _error(graph, node, f"input %{v} is not defined by any node or graph input{hint}")
        _check_attrs(graph, node, op, allow_relaxed)
    if not graph.outputs:
        raise VerifyError(f"graph '{graph.name}' has no outputs")
    for v in graph.outputs:
        if v not in graph:
            raise VerifyError(f"graph output %{v} is not defined by any node or graph input")
    order = graph._stored_or_topological_order()
    if order is None:
        cycle = graph.find_cycle()
        path = " -> ".join("%" + c for c in cycle + cycle[:1])
        raise _error(graph, graph.nodes[cycle[0]], f"is part of a cycle: {path}")
    return order


def verify(graph: Graph, allow_relaxed: bool = True) -> None:
    """Raise :class:`VerifyError` for the first problem found; return None for a valid graph.

    ``allow_relaxed=False`` also rejects choices (backends need discrete graphs)."""
    _check_types(graph, check_structure(graph, allow_relaxed))


def _check_types(graph: Graph, order: list[str], skip: set[str] | frozenset = frozenset()) -> None:
    for name in order:
        if name in skip:
            continue
        node = graph.nodes[name]
        inferred = infer_node_type(graph, node)
        if node.type is None:
            raise _error(graph, node, "has no type; run the shape-inference pass to fill types in")
        if node.type != inferred:
            raise _error(graph, node, f"declared type {node.type} but {node.op} gives {inferred} "
                         "for these inputs and attributes; fix the type or run shape-inference")


def infer_types(graph: Graph, only_missing: bool = False) -> bool:
    """Set node types from their inputs in topological order; return whether any changed.

    With ``only_missing`` declared types are kept (the verifier then checks them).
    """
    return _infer(graph, check_structure(graph), only_missing, set())


def _infer(graph: Graph, order: list[str], only_missing: bool, inferred: set[str]) -> bool:
    """Infer types in ``order``; add the names of the nodes whose type was inferred to ``inferred``."""
    changed = False
    for name in order:
        node = graph.nodes[name]
        if only_missing and node.type is not None:
            continue
        t = infer_node_type(graph, node)
        inferred.add(name)
        if t != node.type:
            node.type = t
            changed = True
    return changed


def infer_and_verify(graph: Graph) -> None:
    """``infer_types(graph, only_missing=True)`` then ``verify(graph)``, as a file is loaded,
    with one structural check and one topological order for both.

    A type inferred here is not inferred again: its inputs' types were final when it was
    (declared ones are kept, inferred ones come first in the order), so it would match."""
    order = check_structure(graph)
    inferred: set[str] = set()
    _infer(graph, order, True, inferred)
    _check_types(graph, order, inferred)
