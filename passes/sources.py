"""Where a graph comes from on the command line: a preset name (built with options), a graph
file (text or JSON form), or a model folder's ``graph.json``; and the graph a search runs
on (a relaxed one as it is, a discrete one through the search-space pipeline)."""
from __future__ import annotations

import difflib
from pathlib import Path

from autonl.ir import AutonlError, Graph, all_presets, build_preset, load_graph

from .manager import PassManager
from .pipelines import search_space_pipeline


def load_target(target: str, resolution: int | None = None, width: float | None = None,
                batch: int | None = None, classes: int | None = None) -> Graph:
    """A preset name (built with the given options) or a graph file (.json or text form)."""
    presets = all_presets()
    if target in presets:
        opts = {"resolution": resolution, "width": width, "batch": batch, "num_classes": classes}
        return build_preset(target, **{k: v for k, v in opts.items() if v is not None})
    if Path(target).is_dir() and (Path(target) / "graph.json").is_file():  # a model folder
        target = str(Path(target) / "graph.json")
    if Path(target).exists():
        given = [n for n, v in (("--resolution", resolution), ("--width", width), ("--batch", batch),
                                ("--classes", classes)) if v is not None]
        if given:
            raise AutonlError(f"{', '.join(given)} apply to presets only, not to the file {target}")
        return load_graph(target)
    close = difflib.get_close_matches(target, presets, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise AutonlError(f"unknown preset or file '{target}'; {hint}known presets: {', '.join(sorted(presets))}")


def relaxed_graph(target: str, space: str, resolution: int | None, width: float | None, classes: int,
                  lightnl_norm: str | None = None) -> Graph:
    """The graph to search: a relaxed preset or file as it is, a discrete one after the
    search-space pipeline with ``space`` (and ``lightnl_norm`` for the LightNL candidates)."""
    graph = load_target(target, resolution, width, None, classes) if target in all_presets() \
        else load_target(target, resolution, width)
    return as_search_space(graph, space, lightnl_norm)


def as_search_space(graph: Graph, space: str, lightnl_norm: str | None = None) -> Graph:
    """``graph`` as a space to search: a relaxed one as it is (its LightNL candidates with
    ``lightnl_norm`` where given), a discrete one through the search-space pipeline."""
    if not graph.relaxed:
        return PassManager(list(search_space_pipeline(space, lightnl_norm)))(graph).graph
    if lightnl_norm:     # a relaxed preset or file: its LightNL candidates take the norm asked for
        for node in graph:
            if node.op == "lightnl":
                node.attrs["norm"] = lightnl_norm
    return graph
