"""What a SOURCE on the command line is, decided in one place (:class:`Source`): a preset
name (built with options), a graph file (text or JSON form, with its weights beside it as
``<stem>.weights.pt`` when ``autonl import`` wrote them), a model folder (``graph.json`` +
``weights.pt``) or a run folder (its ``model/``); and the graph a search runs on (a relaxed
one as it is, a discrete one through the search-space pipeline).

This part needs no torch; loading the weights of a source is
:mod:`autonl.workflows.sources`."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import AutonlError, Graph, all_presets, build_preset, load_graph

from .manager import PassManager
from .pipelines import search_space_pipeline

PRESET = "preset"
GRAPH_FILE = "graph file"
MODEL_FOLDER = "model folder"
FOLDER = "folder"          # any other folder: its graph.json if it has one, no weights

WEIGHTS_SUFFIX = ".weights.pt"


def model_folder(path: str | Path) -> Path | None:
    """The model folder at ``path``: itself (graph.json + weights.pt) or a run's ``model/``."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / "graph.json").is_file() and (folder / "weights.pt").is_file():
            return folder
    return None


def model_folder_to_read(path: str | Path) -> Path:
    """The folder a command that reads a model folder (``autonl eval``) reads at ``path``: the
    model folder (:func:`model_folder`), else a run folder's ``model/`` when it has one, else
    ``path`` itself (its reader then names what is missing)."""
    folder = model_folder(path)
    if folder is not None:
        return folder
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


def weights_beside(graph_file: str | Path) -> Path | None:
    """``<stem>.weights.pt`` beside a graph file (what ``autonl import`` writes), if it is there."""
    path = Path(graph_file)
    beside = path.with_name(path.stem + WEIGHTS_SUFFIX)
    return beside if path.is_file() and beside.is_file() else None


def is_preset(text: str) -> bool:
    """Whether SOURCE ``text`` names a preset (what :meth:`Source.resolve` tries first)."""
    return str(text) in all_presets()


@dataclass(frozen=True)
class Source:
    """A user's SOURCE, resolved (:meth:`resolve`): its ``kind`` (:data:`PRESET`,
    :data:`GRAPH_FILE`, :data:`MODEL_FOLDER` or :data:`FOLDER`), the file its graph is read
    from, its trained weights, the model folder and the run folder it is part of."""

    text: str                         # as the user gave it
    kind: str
    graph_file: Path | None = None    # None for a preset (and a folder without graph.json)
    weights: Path | None = None       # a model folder's weights.pt, or the file beside a graph file
    folder: Path | None = None        # the model folder (a run folder's model/)
    run_folder: Path | None = None    # the run folder, when SOURCE was one

    @classmethod
    def resolve(cls, text: str | Path) -> Source:
        """``text`` as a source, or one line: an unknown name with the closest preset."""
        text = str(text)
        if is_preset(text):
            return cls(text, PRESET)
        path = Path(text)
        folder = model_folder(path) if path.is_dir() else None
        if folder is not None:
            return cls(text, MODEL_FOLDER, folder / "graph.json", folder / "weights.pt", folder,
                       path if folder != path else None)
        if path.is_dir():
            return cls(text, FOLDER, path / "graph.json" if (path / "graph.json").is_file() else None)
        if path.exists():
            return cls(text, GRAPH_FILE, path, weights_beside(path))
        presets = all_presets()
        close = difflib.get_close_matches(text, presets, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AutonlError(f"unknown preset or file '{text}'; {hint}known presets: {', '.join(sorted(presets))}")

    @property
    def is_preset(self) -> bool:
        return self.kind == PRESET

    @property
    def name(self) -> str:
        """What a run calls it: the preset, the graph file, or a folder's ``graph.json``."""
        return str(self.graph_file) if self.kind == MODEL_FOLDER else self.text

    def refuse_preset_options(self, resolution: int | None = None, width: float | None = None,
                              batch: int | None = None, classes: int | None = None) -> None:
        """The options that build a preset, refused (one line) for anything else."""
        given = [n for n, v in (("--resolution", resolution), ("--width", width), ("--batch", batch),
                                ("--classes", classes)) if v is not None]
        if given and not self.is_preset:
            what = f"the model folder {self.text}" if self.kind == MODEL_FOLDER \
                else f"the file {self.graph_file or self.text}"
            raise AutonlError(f"{', '.join(given)} apply to presets only, not to {what}")

    def graph(self, resolution: int | None = None, width: float | None = None, batch: int | None = None,
              classes: int | None = None) -> Graph:
        """The graph: a preset built with the given options, else the file's (options refused)."""
        if self.is_preset:
            opts = {"resolution": resolution, "width": width, "batch": batch, "num_classes": classes}
            return build_preset(self.text, **{k: v for k, v in opts.items() if v is not None})
        self.refuse_preset_options(resolution, width, batch, classes)
        return load_graph(self.graph_file or self.text)


def load_source(source: str, resolution: int | None = None, width: float | None = None,
                batch: int | None = None, classes: int | None = None) -> Graph:
    """The graph of ``source`` (:class:`Source`): a preset built with the given options, or a
    graph file, model folder or run folder."""
    return Source.resolve(source).graph(resolution, width, batch, classes)


def relaxed_graph(source: str, space: str, resolution: int | None, width: float | None, classes: int | None,
                  lightnl_norm: str | None = None) -> Graph:
    """The graph to search: a relaxed preset or file as it is, a discrete one after the
    search-space pipeline with ``space`` (and ``lightnl_norm`` for the LightNL candidates);
    ``classes`` only for a preset (a file has its own)."""
    resolved = Source.resolve(source)
    graph = (resolved.graph(resolution, width, None, classes) if resolved.is_preset
             else resolved.graph(resolution, width))
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
