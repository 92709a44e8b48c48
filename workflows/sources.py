"""A user's SOURCE with its weights: what :class:`~autonl.passes.sources.Source` resolved
(the one place that decides what a SOURCE is), loaded as a model to compile or time
(:func:`load_deployable`), as an IR model to run passes over (:func:`weighted_model`), or
as the network ``autonl run`` searches (:func:`~autonl.workflows.run.run_source`)."""
from __future__ import annotations

from pathlib import Path

from autonl.ir import AutonlError, Graph, Model
from autonl.passes import resize_graph
from autonl.passes.sources import FOLDER, GRAPH_FILE, MODEL_FOLDER, Source, model_folder, relaxed_graph

__all__ = ["Source", "check_model_graphs", "load_deployable", "recorded_data", "space_graph", "start_weights", "training_graph",
           "weighted_model", "weights_line", "write_pass_result"]


def load_deployable(source: Source | str, resolution=None, width=None, batch=None, classes=None, seed: int = 0):
    """The :class:`~autonl.backends.loading.TorchModel` of ``source``: a model folder or run
    folder (trained weights), a graph file (the weights beside it, else random ones) or a
    preset (random weights)."""
    from autonl.backends.loading import graph_file_model, load_model_or_graph

    source = source if isinstance(source, Source) else Source.resolve(source)
    if source.kind == MODEL_FOLDER:
        source.refuse_preset_options(resolution, width, batch, classes)
        return load_model_or_graph(source.text)
    if source.kind == FOLDER:
        raise AutonlError(f"{source.text}: not a model folder (graph.json + weights.pt) nor a run folder with model/")
    graph = source.graph(resolution, width, batch, classes)
    if source.weights is not None:
        return graph_file_model(graph, source.text)
    return load_model_or_graph(graph, seed=seed)


def weighted_model(source: Source, graph: Graph) -> Model | None:
    """The IR model (``graph`` + trained weights) of a model folder, a run folder or a graph
    file with its weights beside it; None for presets and bare graph files."""
    from autonl.backends.loading import graph_file_model, ir_model, load_model_or_graph

    if source.kind == MODEL_FOLDER:
        tm = load_model_or_graph(source.text)
    elif source.kind == GRAPH_FILE and source.weights is not None:
        tm = graph_file_model(graph, source.text)
    else:
        return None
    return ir_model(tm.graph, tm.module)


def write_pass_result(graph: Graph, weights: dict | None, out: str | Path, fmt: str | None = None,
                      weighted: bool = False) -> tuple[Path | None, str | None]:
    """Write the graph ``autonl opt`` made to ``out`` (in ``fmt``, else as its suffix says),
    and, for a ``weighted`` source, the ``weights`` that came through the passes beside it as
    <stem>.weights.pt, where ``autonl compile`` finds them. Returns that weights file (None if
    not written) and why the weights were not written (None if they were, or there were none):
    a relaxed graph, or nodes the passes added, have no trained weights."""
    from autonl.ir import atomic_write, render
    from autonl.ir.files import format_for

    weights_file, why_not = None, None
    if weighted:
        from autonl.backends.torch.lower import to_torch_with_weights
        from autonl.backends.torch.train.weights import torch_bytes
        try:
            module = to_torch_with_weights(Model(graph, weights))
            state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        except AutonlError as e:      # a relaxed graph, or nodes the passes added
            why_not = str(e)
        else:
            weights_file = Path(out).with_name(Path(out).stem + ".weights.pt")
            atomic_write(weights_file, torch_bytes(state))
    atomic_write(out, render(graph, format_for(out, fmt)))
    return weights_file, why_not


def weights_line(model, source: str) -> str:
    """Where the compiled weights came from, said once the compile has succeeded."""
    if Path(model.weights).is_file():
        beside = Path(model.weights).parent != Path(source) and Path(source).is_file()
        return f"weights: {model.weights}" + (f" (beside {source})" if beside else "")
    return (f"weights: {model.weights}: no trained weights given (a model folder, a run folder, or a "
            f"<name>.weights.pt beside the graph file); latencies are real, accuracy is not")


def space_graph(source: str, space: str, resolution: int | None, width: float | None, classes: int | None) -> Graph:
    """The relaxed graph of a preset (at 224 unless ``resolution``, 1000 classes unless
    ``classes``) or a graph file (at ``resolution`` if given, its own classes), with
    ``space``'s choices: what ``latency-table`` and ``tune-space`` time."""
    resolved = Source.resolve(source)
    if resolved.is_preset:
        return relaxed_graph(source, space, resolution or 224, width, classes or 1000)
    resolved.refuse_preset_options(classes=classes)
    graph = relaxed_graph(source, space, None, width, None)
    return resize_graph(graph, resolution) if resolution is not None else graph


def start_weights(source: str, init: str | None, from_scratch: bool) -> str | None:
    """``autonl train``'s ``--init``: as given, else a model folder (or a run folder's model/)
    as SOURCE starts from its own weights (fine-tuning) unless ``from_scratch``."""
    if from_scratch and init:
        raise AutonlError("--from-scratch and --init contradict each other; pick one")
    if init is None and not from_scratch and Path(source).is_dir():
        resolved = Source.resolve(source)
        if resolved.kind == MODEL_FOLDER:
            return source if resolved.run_folder is None else str(resolved.folder)
    return init


def check_model_graphs(*paths: str | None) -> None:
    """Before any work: each of ``paths`` that resolves (:class:`Source`) to a folder with a
    graph (a model folder, a run folder's ``model/``, a folder with ``graph.json``) has a
    ``graph.ir`` that agrees with its ``graph.json`` (the authoritative one), or one line."""
    from autonl.backends.torch.train.weights import read_model_graph

    for path in paths:
        if path is not None and Path(path).is_dir():      # --init may be a .pt file
            graph_file = Source.resolve(path).graph_file
            if graph_file is not None:
                read_model_graph(graph_file.parent)


def recorded_data(*paths: str | None) -> str | None:
    """The data the first of ``paths`` that is a model folder (or a run folder) records in
    its data.json, if any: what a model is fine-tuned or checked on by default."""
    from autonl.backends.torch.data import read_data_facts

    folders = [model_folder(p) for p in paths if p is not None and Path(p).is_dir()]
    facts = next((f for f in (read_data_facts(p) for p in folders if p is not None) if f is not None), None)
    return facts["data"] if facts else None


def training_graph(source: str, resolution: int | None, width: float | None, data: str,
                   preset_resolution: int | None = None) -> Graph:
    """The graph ``autonl train`` trains: a preset at ``resolution`` (else
    ``preset_resolution``, else 32) with as many outputs as ``data`` has classes, else the
    file's or folder's own (options refused)."""
    resolved = Source.resolve(source)
    if resolved.is_preset:
        from autonl.backends.torch.data import num_classes
        return resolved.graph(resolution or preset_resolution or 32, width, None, num_classes(data))
    return resolved.graph(resolution, width)
