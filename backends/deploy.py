"""What every deployment backend shares: a model (graph + weights) from a model folder, a
run folder or a bare graph, the deployment graph (primitives, BN folded, weights bound),
and the manifest written beside the compiled files.

The deployment graph is made by passes, so ``autonl compile`` and a user's own pipeline
see the same thing::

    lower-composites -> fold-bn -> dce -> shape-inference

with ``graph.params`` holding the weights, keyed like the torch state dict.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from autonl.ir import AutonlError, Graph
from autonl.ir.io import atomic_write

DEPLOY_PASSES = ("lower-composites", "fold-bn", "dce", "shape-inference")


@dataclass
class Model:
    """A discrete graph, its torch module (eval mode) and where the weights came from."""

    graph: Graph
    module: torch.nn.Module
    weights: str          # "path/to/weights.pt" or "random init (seed 0)"
    source: str


def model_folder(path: str | Path) -> Path | None:
    """The model folder at ``path``: itself (graph.json + weights.pt) or a run's ``model/``."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / "graph.json").is_file() and (folder / "weights.pt").is_file():
            return folder
    return None


def check_discrete(graph: Graph) -> None:
    if graph.relaxed:
        open_nodes = [n.name for n in graph if n.relaxed]
        few = ", ".join("%" + n for n in open_nodes[:3]) + (f" (+{len(open_nodes) - 3} more)" if len(open_nodes) > 3 else "")
        raise AutonlError(f"graph '{graph.name}' is relaxed: {len(open_nodes)} node(s) still have choices "
                          f"({few}); derive it first (autonl derive RUN --out MODEL)")


def load_model_or_graph(src: str | Path | Graph, seed: int = 0) -> Model:
    """A model folder or run folder (trained weights), or a discrete graph (random weights)."""
    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.weights import WEIGHTS_FILE, load_model

    if isinstance(src, Graph):
        check_discrete(src)
        torch.manual_seed(seed)
        module = randomize_bn(to_torch(src).eval(), seed)
        return Model(src, module, f"random init (seed {seed}), random BN statistics", src.source or src.name)
    folder = model_folder(src)
    if folder is None:
        raise AutonlError(f"{src}: not a model folder (graph.json + weights.pt) nor a run folder with model/")
    from autonl.ir.io import load_graph
    check_discrete(load_graph(folder / "graph.json"))
    graph, module = load_model(folder)
    return Model(graph, module, str(folder / WEIGHTS_FILE), str(folder))


def randomize_bn(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine terms, in place.

    A freshly initialised network has BN at identity and every LightNL's last BN gamma at 0
    (the block starts as the identity), so its logits barely depend on most layers and a
    backend that got a layer wrong could still match. With random BN every layer and every
    LightNL block shapes the logits, which is what parity checks and latency work need.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def bind_params(graph: Graph, module: torch.nn.Module) -> Graph:
    """A copy of ``graph`` with the module's weights bound as numpy arrays (``graph.params``)."""
    out = graph.copy()
    out.params = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
                  if not k.endswith("num_batches_tracked")}
    return out


def deploy_graph(model: Model, fold_bn: bool = True) -> Graph:
    """The model as a graph of primitives with bound weights, BN folded into convs."""
    from autonl.passes import PassManager

    passes = [p for p in DEPLOY_PASSES if fold_bn or p != "fold-bn"]
    return PassManager(passes)(bind_params(model.graph, model.module)).graph


def reference_input(graph: Graph, batch: int | None = None, seed: int = 0) -> np.ndarray:
    """A fixed random input for parity checks, shaped like the graph's (first) input."""
    t = graph.inputs[next(iter(graph.inputs))]
    shape = (batch or t.shape[0], *t.shape[1:])
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def torch_logits(model: Model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in ("autonl", "torch", *packages):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_out(out: str | Path) -> Path:
    """Fail early, before any work, if the output folder cannot be created or written."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AutonlError(f"{out}: cannot create the output folder: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AutonlError(f"{out}: cannot create the output folder: {probe} is not writable")
    return out


def prepare_out(out: str | Path) -> Path:
    """The output folder, created; one line if it cannot be."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AutonlError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AutonlError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    return out


def write_manifest(out: Path, manifest: dict, files: list[str]) -> dict:
    """Add size and sha256 of each file (relative to ``out``) and write manifest.json last."""
    manifest["files"] = {name: {"bytes": (out / name).stat().st_size, "sha256": sha256(out / name)}
                         for name in files}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def io_signature(graph: Graph, batch_name: str | None = None) -> dict:
    """Inputs and outputs as {name, shape, dtype}; the batch dim as ``batch_name`` if given."""
    def row(name, t):
        shape = list(t.shape)
        if batch_name:
            shape[0] = batch_name
        return {"name": name, "shape": shape, "dtype": t.dtype}
    return {"inputs": [row(n, t) for n, t in graph.inputs.items()],
            "outputs": [row(n, graph.type_of(n)) for n in graph.outputs]}


def write_run_manifest(folder: str | Path, kind: str, inputs: dict, seed: int | None) -> dict:
    """manifest.json for a run folder (search, train, derive): what made it, its seed, the
    versions, and every file in it (recursively) with size and sha256; written last."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    manifest = {"format": "autonl-run-folder", "version": 1, "kind": kind, "inputs": inputs,
                "seeds": {"seed": seed}, "versions": versions("numpy")}
    return write_manifest(folder, manifest, files)

