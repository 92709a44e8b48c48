"""Weights between the IR and torch: a model folder holds the graph and its state dict.

``save_model(graph, module, folder)`` writes ``graph.json``, ``graph.ir`` and
``weights.pt`` (each to a temporary name, then renamed); ``load_model(folder)`` reads
them back into a fresh module. Files that are not torch files, are truncated, or do not
fit the graph are refused with one line naming the file and the tensor.

One source of truth: ``graph.json`` is the graph of a model folder; ``graph.ir`` is its text
form, written beside it for people to read, and must say the same (a folder whose two
files disagree was edited by hand or half-copied, and is refused, naming the first
difference). The weights must fit the module built from ``graph.json`` exactly: the same
names, shapes and dtypes (a float64 or float16 tensor where the module has float32 is not
silently cast), and every value finite.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from autonl.ir import AutonlError, Graph
from autonl.ir import atomic_write, diff_graphs, load_graph, render

from ..lower import to_torch

GRAPH_FILE, TEXT_FILE, WEIGHTS_FILE = "graph.json", "graph.ir", "weights.pt"


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _clipped(text: str, limit: int = 160) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, '...' marking a cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def _unreadable(path: Path, what: str, e: BaseException) -> str:
    import re

    text = str(e).strip()
    # torch's refusal opens with a paragraph on weights_only; the reason is further down
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = found.group(1).strip() if found else text.splitlines()[0] if text else type(e).__name__
    return f"{path}: not a readable {what} (truncated, corrupt or not written by torch.save: {_clipped(first)})"


def _pickled_objects(path: Path, what: str, says: str) -> str:
    """The line for a file that holds pickled Python objects besides tensors, which
    ``torch.load(weights_only=True)`` refuses to rebuild: unpickling them could run code."""
    import re

    found = re.search(r"Unsupported global: GLOBAL (\S+)", says)
    which = f" ({found.group(1)})" if found else ""
    return (f"{path}: holds pickled Python objects{which}, not only tensors; autonl never unpickles objects, "
            f"since loading a pickle can run any code. Save a plain state dict instead: "
            f"torch.save(module.state_dict(), ...) (a {what} of tensors)")


def read_torch_file(path: str | Path, what: str = "weights file") -> dict:
    """``torch.load`` with weights only, turning every way a file can be bad into one line."""
    path = Path(path)
    if not path.is_file():
        raise AutonlError(f"{path}: no such {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):      # a reference to a class or function: an object to rebuild
            raise AutonlError(_pickled_objects(path, what, str(e))) from None
        raise AutonlError(_unreadable(path, what, e)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise AutonlError(_unreadable(path, what, e)) from None
    if not isinstance(obj, dict):
        raise AutonlError(f"{path}: not a {what}: it holds a {type(obj).__name__}, not a dict")
    return obj


def check_state_dict(state: dict, module: nn.Module, source: str, graph_name: str) -> None:
    """Raise one line if ``state`` does not fit ``module`` exactly (names, shapes, dtypes) or
    holds a value that is not finite."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    if missing or unexpected:
        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"] if unexpected else [])
        raise AutonlError(f"{source}: weights do not fit graph '{graph_name}': {'; '.join(parts)}")
    for k, v in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise AutonlError(f"{source}: {k} has shape {shape} in the file but {tuple(v.shape)} "
                              f"in graph '{graph_name}'")
        if got.dtype != v.dtype:
            raise AutonlError(f"{source}: {k} is {_dtype(got)} in the file but {_dtype(v)} in graph "
                              f"'{graph_name}' (weights are not converted silently)")
        if got.is_floating_point() or got.is_complex():
            bad = ~torch.isfinite(got)
            if bool(bad.any()):
                n, nan = int(bad.sum()), int(torch.isnan(got).sum())
                kinds = " and ".join(w for w, c in (("NaN", nan), ("inf", n - nan)) if c)
                raise AutonlError(f"{source}: {k} holds {n} non-finite value{'s' * (n > 1)} ({kinds}) "
                                  f"among its {got.numel()}; such weights are unusable")
            if k.endswith("running_var") and bool((got < 0).any()):
                n = int((got < 0).sum())
                raise AutonlError(f"{source}: {k} holds {n} negative value{'s' * (n > 1)} (as low as "
                                  f"{float(got.min()):.3g}) among its {got.numel()}; a batch norm's running variance "
                                  f"is never negative, so the file was edited or is damaged: retrain, or restore it")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def load_weights(module: nn.Module, path: str | Path, graph_name: str = "the graph") -> None:
    state = read_torch_file(path)
    if "model" in state and isinstance(state["model"], dict):  # a training checkpoint
        state = state["model"]
    check_state_dict(state, module, str(path), graph_name)
    module.load_state_dict(state)


def save_model(graph: Graph, module: nn.Module, folder: str | Path, data: dict | None = None) -> Path:
    """``data``: the data facts (:func:`autonl.backends.torch.data.data_facts`), written as
    ``data.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    if data is not None:
        import json
        atomic_write(folder / "data.json", json.dumps(data, indent=1) + "\n")
    atomic_write(folder / WEIGHTS_FILE, torch_bytes(state))
    atomic_write(folder / GRAPH_FILE, render(graph, "json"))
    atomic_write(folder / TEXT_FILE, render(graph, "text"))
    return folder


def read_model_graph(folder: str | Path) -> Graph:
    """The graph of a model folder: ``graph.json``, the authoritative file; ``graph.ir``,
    where present, must agree with it (one line naming graph.ir and the first difference)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutonlError(f"{folder}: no such model folder")
    graph_path = folder / GRAPH_FILE
    if not graph_path.exists():
        raise AutonlError(f"{folder}: no {GRAPH_FILE} here; a model folder holds {GRAPH_FILE} and {WEIGHTS_FILE}")
    graph = load_graph(graph_path)
    text_path = folder / TEXT_FILE
    if text_path.exists():
        text = load_graph(text_path)
        if render(text, "text") != render(graph, "text"):
            diffs = diff_graphs(graph, text) or ([f"graph name {graph.name} -> {text.name}"]
                                                 if graph.name != text.name else ["their text forms differ"])
            more = f" (+{len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise AutonlError(f"{text_path}: disagrees with {GRAPH_FILE}, the authoritative graph of a model "
                              f"folder ({GRAPH_FILE} -> {TEXT_FILE}: {diffs[0]}{more}); delete {TEXT_FILE} or "
                              f"rewrite it from {GRAPH_FILE}")
    return graph


def load_model(folder: str | Path, graph: Graph | None = None) -> tuple[Graph, torch.fx.GraphModule]:
    """A model folder (graph.json + weights.pt, checked against each other and graph.ir) as
    (graph, module in eval mode); ``graph``: the folder's graph, already read by
    :func:`read_model_graph`."""
    folder = Path(folder)
    if graph is None:
        graph = read_model_graph(folder)
    module = to_torch(graph)
    load_weights(module, folder / WEIGHTS_FILE, graph.name)
    return graph, module.eval()
