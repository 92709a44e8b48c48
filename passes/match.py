"""Finding nodes: by op and attributes, or by a subgraph pattern written in the text form.

A pattern is a graph whose inputs are wildcards (they match any value) and whose nodes
match target nodes of the same op whose attributes include the pattern node's attributes
(defaults filled in). Types in a pattern may be left out. Matching is subgraph
monomorphism by networkx's ``DiGraphMatcher``::

    pattern = parse_graph('''graph p(%x: f32[1]) {
      %c = conv2d(%x) {k=1}
      %b = batch_norm(%c)
      return %b
    }''')
    for m in match_pattern(graph, pattern):   # m maps pattern names to graph names
        ...
"""
from __future__ import annotations

from typing import Any, Iterator

from networkx.algorithms import isomorphism

from autonl.ir import Graph, Node
from autonl.ir.ops import get_op


def find_nodes(graph: Graph, op: str | None = None, **attrs: Any) -> list[Node]:
    """Nodes of ``op`` (any op if None) whose attributes (defaults filled in) equal ``attrs``."""
    found = []
    for node in graph:
        if op is not None and node.op != op:
            continue
        full = get_op(node.op).full_attrs(node.attrs)
        if all(k in full and full[k] == v for k, v in attrs.items()):
            found.append(node)
    return found


def match_pattern(graph: Graph, pattern: Graph,
                  alternatives: dict[str, tuple[str, ...]] | None = None) -> Iterator[dict[str, str]]:
    """Every embedding of ``pattern`` in ``graph``, as {pattern value: graph value}.

    ``alternatives`` lets a pattern node match any of several ops ({pattern node: ops}, e.g.
    every activation); its attributes are then not compared. Pattern outputs other than the
    last computed node may be used elsewhere in the graph; interior pattern nodes are not
    required to be single-use (check ``graph.users`` if a rewrite needs that).
    """
    target = graph.to_networkx()
    pat = pattern.to_networkx()
    alternatives = alternatives or {}
    for n, node in pat.nodes(data=True):
        node["ops"] = alternatives.get(n, (node["op"],))

    def node_match(t: dict, p: dict) -> bool:
        if p["kind"] == "input":
            return True
        return t["kind"] == "node" and t["op"] in p["ops"]

    def edge_match(t: dict, p: dict) -> bool:
        return {e["index"] for e in p.values()} <= {e["index"] for e in t.values()}

    matcher = isomorphism.MultiDiGraphMatcher(target, pat, node_match=node_match, edge_match=edge_match)
    seen: set[frozenset] = set()
    for mapping in matcher.subgraph_monomorphisms_iter():
        inverse = {p: t for t, p in mapping.items()}
        if not all(n.name in alternatives or _attrs_match(graph.nodes[inverse[n.name]], n) for n in pattern):
            continue
        key = frozenset(inverse.items())
        if key not in seen:
            seen.add(key)
            yield inverse


def _attrs_match(node: Node, pattern_node: Node) -> bool:
    full = get_op(node.op).full_attrs(node.attrs)
    return all(k in full and full[k] == v for k, v in pattern_node.attrs.items())


__all__ = ["find_nodes", "match_pattern"]
