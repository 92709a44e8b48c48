"""Graph files: the format from the suffix (``.json``: JSON form, ``.dot``: DOT, anything else:
the text form), loading with type inference and verification, and rendering."""
from __future__ import annotations

from pathlib import Path

from .atomic import atomic_write
from .errors import AutonlError
from .graph import Graph
from .json_form import dumps as json_dumps
from .json_form import load_json
from .text_form import load_text, print_graph
from .verify import infer_and_verify

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
        infer_and_verify(graph)  # infer_types(graph, only_missing=True), then verify(graph)
    return graph


def render(graph: Graph, fmt: str = "text", costs: bool = True) -> str:
    if fmt == "json":
        return json_dumps(graph)
    if fmt == "dot":
        return graph.to_dot()
    if fmt == "text":
        return print_graph(graph, costs=costs)
    raise AutonlError(f"unknown format '{fmt}'; known formats: {', '.join(FORMATS)}")


def save_graph(graph: Graph, path: str | Path, fmt: str | None = None) -> None:
    atomic_write(path, render(graph, format_for(path, fmt)))
