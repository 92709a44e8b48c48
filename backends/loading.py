"""Models a backend can compile: a discrete graph with its torch module and where its weights
came from (:class:`TorchModel`), loaded from a model folder, a run folder or a bare graph;
the same model as an IR :class:`~autonl.ir.Model` (graph + numpy weights) and as the
deployment model the ``deploy`` pipeline makes of it (primitives, BN folded)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autonl.ir import AutonlError, Graph, Model
from autonl.passes import PassManager
from autonl.passes.sources import model_folder, weights_beside

@dataclass
class TorchModel:
    """A discrete graph, its torch module (eval mode) and where the weights came from."""

    graph: Graph
    module: torch.nn.Module
    weights: str          # "path/to/weights.pt" or "random init (seed 0)"
    source: str
    data: dict | None = None   # the folder's data.json (classes, preprocessing), when it has one


def check_discrete(graph: Graph) -> None:
    if graph.relaxed:
        open_nodes = [n.name for n in graph if n.relaxed]
        few = ", ".join("%" + n for n in open_nodes[:3]) + (f" (+{len(open_nodes) - 3} more)" if len(open_nodes) > 3 else "")
        raise AutonlError(f"graph '{graph.name}' is relaxed: {len(open_nodes)} node(s) still have choices "
                          f"({few}); derive it first (autonl derive RUN --out MODEL)")


def load_model_or_graph(src: str | Path | Graph, seed: int = 0) -> TorchModel:
    """A model folder or run folder (trained weights), or a discrete graph (random weights)."""
    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.train.weights import WEIGHTS_FILE, load_model, read_model_graph

    if isinstance(src, Graph):
        check_discrete(src)
        torch.manual_seed(seed)
        module = randomize_bn(to_torch(src).eval(), seed)
        return TorchModel(src, module, f"random init (seed {seed}), random BN statistics", src.source or src.name)
    folder = model_folder(src)
    if folder is None:
        raise AutonlError(f"{src}: not a model folder (graph.json + weights.pt) nor a run folder with model/")
    graph = read_model_graph(folder)        # graph.json, checked against graph.ir
    check_discrete(graph)
    graph, module = load_model(folder, graph)   # weights checked: names, shapes, dtypes, finite
    from autonl.backends.torch.data import read_data_facts
    return TorchModel(graph, module, str(folder / WEIGHTS_FILE), str(folder), read_data_facts(folder, graph))


def graph_file_model(graph: Graph, graph_file: str | Path) -> TorchModel:
    """A graph read from ``graph_file`` with the weights file beside it, checked (names,
    shapes, dtypes, finite) like a model folder's."""
    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.train.weights import load_weights

    check_discrete(graph)
    weights = weights_beside(graph_file)
    module = to_torch(graph)
    load_weights(module, weights, graph.name)
    return TorchModel(graph, module.eval(), str(weights), str(graph_file))


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


def ir_model(graph: Graph, module: torch.nn.Module) -> Model:
    """``graph`` with the module's weights as numpy arrays, keyed like its state dict."""
    return Model(graph, {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
                         if not k.endswith("num_batches_tracked")})


def deploy_model(model: TorchModel, fold_bn: bool = True) -> Model:
    """The model as a graph of primitives with its weights, BN folded into convs: the
    ``deploy`` pipeline (``deploy-keep-bn`` without folding)."""
    return PassManager("deploy" if fold_bn else "deploy-keep-bn").run(ir_model(model.graph, model.module))


def reference_input(graph: Graph, batch: int | None = None, seed: int = 0) -> np.ndarray:
    """A fixed random input for parity checks, shaped like the graph's (first) input."""
    t = graph.inputs[next(iter(graph.inputs))]
    shape = (batch or t.shape[0], *t.shape[1:])
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def torch_logits(model: TorchModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()
