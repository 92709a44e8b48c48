"""The JSON form of a graph: versioned, checked against a JSON Schema, lossless.

``{"format": "autonl-ir", "version": 1, "name", "inputs", "nodes", "outputs"}``; a choice
is ``{"choice": [...]}``. The schema lives in ``schema/graph-v1.schema.json``.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .choice import Choice
from .errors import AutonlError, ParseError
from .graph import Graph, Node
from .types import TensorType

FORMAT = "autonl-ir"
VERSION = 1


@lru_cache(maxsize=None)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files(__package__).joinpath("schema/graph-v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _value_to_json(v: Any) -> Any:
    if isinstance(v, Choice):
        return {"choice": [_value_to_json(o) for o in v.options]}
    if isinstance(v, float) and not math.isfinite(v):
        raise AutonlError(f"the JSON form cannot hold the float {v!r}")
    return v


def _value_from_json(v: Any) -> Any:
    if isinstance(v, dict):
        return Choice(*v["choice"])
    return v


def graph_to_dict(graph: Graph) -> dict:
    nodes = []
    for n in graph.nodes.values():
        d = {"name": n.name, "op": n.op, "inputs": list(n.inputs),
             "attrs": {k: _value_to_json(v) for k, v in n.attrs.items()}}
        if n.type is not None:
            d["type"] = n.type.to_json()
        nodes.append(d)
    return {"format": FORMAT, "version": VERSION, "name": graph.name,
            "inputs": [{"name": k, "type": t.to_json()} for k, t in graph.inputs.items()],
            "nodes": nodes, "outputs": list(graph.outputs)}


def dumps(graph: Graph) -> str:
    return json.dumps(graph_to_dict(graph), indent=1) + "\n"


def graph_from_dict(doc: Any, file: str | None = None) -> Graph:
    where = file or "<json>"
    if isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") != VERSION:
        raise ParseError(f"schema version {doc.get('version')!r} is not supported "
                         f"(this autonl reads version {VERSION})", where)
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        msg = e.message if len(e.message) < 200 else e.message[:200] + "..."
        raise ParseError(f"does not match the autonl-ir v{VERSION} schema at {path}: {msg}", where)
    g = Graph(doc["name"], {i["name"]: TensorType.from_json(i["type"]) for i in doc["inputs"]})
    if len(g.inputs) != len(doc["inputs"]):
        raise ParseError("a graph input name is declared twice", where)
    for i, d in enumerate(doc["nodes"]):
        if d["name"] in g:
            raise ParseError(f"nodes/{i}: %{d['name']} is defined twice", where)
        try:
            attrs = {k: _value_from_json(v) for k, v in d["attrs"].items()}
        except AutonlError as e:
            raise ParseError(f"nodes/{i} (%{d['name']}): {e}", where) from None
        t = TensorType.from_json(d["type"]) if "type" in d else None
        g.nodes[d["name"]] = Node(d["name"], d["op"], list(d["inputs"]), attrs, t)
    g.outputs = list(doc["outputs"])
    return g


def loads(text: str, file: str | None = None) -> Graph:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(e.msg, file or "<json>", e.lineno, e.colno) from None
    return graph_from_dict(doc, file)


def load_json(path: str | Path) -> Graph:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ParseError("not a text file (invalid UTF-8)", str(path)) from None
    return loads(text, str(path))
