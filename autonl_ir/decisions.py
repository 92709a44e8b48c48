"""Decisions: the value chosen for every choice of a relaxed graph, ``{node: {attr: value}}``.

Stored as JSON. :func:`check_decisions` names the node and the attribute of every
misfit (unknown node, attribute without a choice, value outside the options, wrong type,
missing decision) in one line.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from .choice import Choice, same_value
from .errors import AutonlError
from .graph import Graph
from .json_file import check_schema, read_json_file

MAX_DECISIONS_BYTES = 16 << 20

Decisions = dict[str, dict[str, Any]]


def choice_space(graph: Graph) -> dict[str, dict[str, Choice]]:
    """Every choice of the graph: ``{node: {attr: Choice}}``."""
    return {n.name: n.choices() for n in graph if n.relaxed}


def check_decisions(graph: Graph, decisions: Any, complete: bool = True, source: str = "decisions") -> Decisions:
    """Return ``decisions`` if they fit ``graph``; otherwise raise one line naming the misfit."""
    space = choice_space(graph)
    if not isinstance(decisions, dict) or not all(isinstance(v, dict) for v in decisions.values()):
        raise AutonlError(f"{source}: expected an object {{node: {{attribute: value}}}}")
    for node, attrs in decisions.items():
        if node not in graph.nodes:
            close = difflib.get_close_matches(node, list(space), n=1)
            hint = f" did you mean '{close[0]}'?" if close else ""
            raise AutonlError(f"{source}: node '{node}' is not in graph '{graph.name}';{hint}")
        for attr, value in attrs.items():
            options = space.get(node, {}).get(attr)
            if options is None:
                known = ", ".join(space.get(node, {})) or "none"
                raise AutonlError(f"{source}: node '{node}' has no choice for attribute '{attr}' "
                                  f"(its choices: {known})")
            if value not in options:
                kinds = {type(o).__name__ for o in options}
                if type(value).__name__ not in kinds:
                    raise AutonlError(f"{source}: node '{node}' attribute '{attr}': expected "
                                      f"{' or '.join(sorted(kinds))}, got {type(value).__name__} {value!r}")
                raise AutonlError(f"{source}: node '{node}' attribute '{attr}': {value!r} is not one of "
                                  f"the options {list(options.options)}")
    if complete:
        for node, attrs in space.items():
            for attr in attrs:
                if attr not in decisions.get(node, {}):
                    raise AutonlError(f"{source}: no decision for node '{node}' attribute '{attr}' "
                                      f"(decided: {sum(len(a) for a in decisions.values())} of "
                                      f"{sum(len(a) for a in space.values())})")
    return decisions


def apply_decisions(graph: Graph, decisions: Decisions, complete: bool = True) -> Graph:
    """A copy of ``graph`` with each decided choice replaced by its value."""
    check_decisions(graph, decisions, complete)
    out = graph.copy()
    for node, attrs in decisions.items():
        for attr, value in attrs.items():
            option = next(o for o in out.nodes[node].attrs[attr].options if same_value(o, value) or o == value)
            out.nodes[node].attrs[attr] = option
    return out


# {node: {attribute: value}}: a value is what a choice's option may be (a scalar, or a list of
# them); the reader (.json_file) has refused non-finite numbers, repeated keys and deep nesting
DECISIONS_SCHEMA = {"type": "object", "maxProperties": 1_000_000,
                    "additionalProperties": {"type": "object", "maxProperties": 64,
                                             "additionalProperties": {"type": ["number", "string", "boolean",
                                                                               "array", "null"]}}}


def load_decisions(path: str | Path) -> Decisions:
    """The decisions in ``path`` (JSON, :func:`dumps_decisions`'s form), read and checked by
    :mod:`.json_file`; whether they fit a graph is :func:`check_decisions`'s question."""
    path = Path(path)
    hint = " (expected {node: {attribute: value}}, as autonl search writes it)"
    doc = read_json_file(path, "decisions file", max_bytes=MAX_DECISIONS_BYTES, hint=hint,
                         missing=f"{path}: no such decisions file")
    return check_schema(doc, DECISIONS_SCHEMA, str(path), "decisions file", hint)


def dumps_decisions(decisions: Decisions) -> str:
    return json.dumps(decisions, indent=1) + "\n"
