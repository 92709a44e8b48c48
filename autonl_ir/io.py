"""Reading and writing graph files, atomic writes, and structural comparison."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx

from .errors import AutonlError
from .graph import Graph
from .json_form import dumps as json_dumps
from .json_form import load_json
from .ops.registry import get_op
from .text_form import load_text, print_graph
from .verify import infer_types, verify

FORMATS = ("text", "json", "dot")


def format_for(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise AutonlError(f"unknown format '{fmt}'; known formats: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".dot": "dot", ".gv": "dot"}.get(suffix, "text")


def load_graph(path: str | Path, fmt: str | None = None, check: bool = True) -> Graph:
    """Read a graph (``.json``: JSON form, anything else: text form), fill in missing types,
    and verify it. Errors name the file, and the line where the text form gives one."""
    path = Path(path)
    if not path.is_file():
        raise AutonlError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    kind = format_for(path, fmt)
    if kind == "dot":
        raise AutonlError(f"{path}: DOT is an export format; read a .json or text graph instead")
    graph = load_json(path) if kind == "json" else load_text(path)
    graph.source = str(path)
    if check:
        infer_types(graph, only_missing=True)
        verify(graph)
    return graph


def render(graph: Graph, fmt: str = "text", costs: bool = True) -> str:
    if fmt == "json":
        return json_dumps(graph)
    if fmt == "dot":
        return graph.to_dot()
    if fmt == "text":
        return print_graph(graph, costs=costs)
    raise AutonlError(f"unknown format '{fmt}'; known formats: {', '.join(FORMATS)}")


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: a reader
    sees the old file or the whole new one, never half of one."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AutonlError(f"{path}: the folder {parent} does not exist")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise AutonlError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        # mkstemp makes the file 0600; give it the old file's mode, or the usual 0644
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise AutonlError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def save_graph(graph: Graph, path: str | Path, fmt: str | None = None) -> None:
    atomic_write(path, render(graph, format_for(path, fmt)))


def _full_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    try:
        return get_op(op).full_attrs(attrs)
    except AutonlError:
        return dict(attrs)


def structural_equal(a: Graph, b: Graph) -> bool:
    """Same computation up to node names: ops, attributes (defaults filled in), types and
    wiring, compared as labelled graphs with networkx's isomorphism test."""
    def labelled(g: Graph) -> nx.MultiDiGraph:
        h = g.to_networkx()
        for v in h.nodes:
            d = h.nodes[v]
            d["label"] = (("input", list(g.inputs).index(v), str(d["type"])) if d["kind"] == "input"
                          else (d["op"], repr(_full_attrs(d["op"], g.nodes[v].attrs)), str(d["type"])))
        for i, out in enumerate(g.outputs):
            h.add_node(("output", i), label=("output", i))
            h.add_edge(out, ("output", i), key=0, index=0)
        return h

    if len(a.nodes) != len(b.nodes) or len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
        return False
    return nx.is_isomorphic(
        labelled(a), labelled(b),
        node_match=lambda x, y: x["label"] == y["label"],
        edge_match=lambda x, y: sorted(e["index"] for e in x.values()) == sorted(e["index"] for e in y.values()))


def resize_graph(graph: Graph, resolution: int) -> Graph:
    """A copy of ``graph`` with its (single, NCHW) input at ``resolution`` x ``resolution`` and
    every type inferred again; the costs of a network at another input size."""
    if len(graph.inputs) != 1:
        raise AutonlError(f"graph '{graph.name}' has {len(graph.inputs)} inputs; resizing needs one")
    name, t = next(iter(graph.inputs.items()))
    if t.rank != 4:
        raise AutonlError(f"graph '{graph.name}': input %{name} is {t}, not an NCHW image")
    out = graph.copy()
    out.inputs[name] = t.with_shape((*t.shape[:2], resolution, resolution))
    infer_types(out)
    verify(out)
    return out
