"""The JSON form of a graph: versioned, checked against a JSON Schema, lossless.

``{"format": "autonl-ir", "version": 1, "name", "inputs", "nodes", "outputs"}``; a choice
is ``{"choice": [...]}``. The schema lives in ``schema/graph-v1.schema.json``.
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .choice import Choice
from .errors import AutonlError, ParseError
from .graph import Graph, Node
from .text_form import MAX_NESTING
from .types import TensorType

FORMAT = "autonl-ir"
VERSION = 1


@lru_cache(maxsize=None)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files(__package__).joinpath("schema/graph-v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(_inline_refs(schema, schema["$defs"]))


def _inline_refs(schema: Any, defs: dict) -> Any:
    """The schema with each ``{"$ref": "#/$defs/x"}`` replaced by ``x`` itself: the same checks and
    messages, without a reference lookup per node (a third of the time of a large file)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if len(schema) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref[len("#/$defs/"):]], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(v, defs) for v in schema]
    return schema


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
    try:
        return _from_dict(doc, where)
    except RecursionError:  # the schema's message shows the offending value, recursively
        raise ParseError("arrays and objects nested too deeply to check against the schema", where) from None


def _from_dict(doc: Any, where: str) -> Graph:
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
    where = file or "<json>"
    try:
        doc = json.loads(text)
        return _from_dict(doc, where)
    except json.JSONDecodeError as e:
        raise ParseError(e.msg, where, e.lineno, e.colno) from None
    except RecursionError:  # json.loads (and the schema's messages) recurse on nesting
        raise _too_deep(text, where) from None


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep(text: str, where: str, limit: int = MAX_NESTING) -> ParseError:
    """The error for a document nested too deeply to read, at the first bracket past ``limit``."""
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > limit:
                pos = m.start()
                line = text.count("\n", 0, pos) + 1
                return ParseError(f"arrays and objects nested deeper than {limit} levels", where,
                                  line, pos - text.rfind("\n", 0, pos))
        elif c == "]" or c == "}":
            depth -= 1
    return ParseError("arrays and objects nested too deeply to read", where)


def load_json(path: str | Path) -> Graph:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ParseError("not a text file (invalid UTF-8)", str(path)) from None
    return loads(text, str(path))
