"""``autonl tune-space``: one tuning database for every network a search space can derive.

A derived network is made of the space's blocks (every relaxed node with one combination of
its options, in its real input shape: the latency table's blocks,
:func:`autonl.backends.latency.measure.block_graph`) and the fixed part. Its TVM kernels are
therefore the kernels of those blocks, compiled alone, plus the fixed part's: the modules
here are every distinct block and a few random whole sub-networks (for the fixed part and
the kernels at block borders), each lowered as ``autonl compile --backend tvm`` lowers a
network. Their MetaSchedule tasks are pooled and deduplicated by workload (many blocks share
shapes: the AutoNL space at 224 has 320 block options, 72 distinct blocks); each distinct
workload is tuned once, with the budget spread as :mod:`.schedule` spreads it. A network
derived from the space then compiles with ``--tuning-dir DB`` and no new trials;
``autonl compile`` says how many of its tasks the database covered.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from tqdm.auto import tqdm

from autonl.ir import AutonlError, Graph, render, verify
from autonl.passes import SearchSpace

from ..loading import deploy_model, load_model_or_graph
from ..onnx.export import export_onnx
from .compile import layout_for, pre_tuning, to_relax


def windows(graph: Graph) -> list[Graph]:
    """The relaxed ``graph`` cut where a single value carries everything on (the value between
    two blocks: every later node reads only it or later nodes); the pieces that hold a relaxed
    node, each a graph of its own with that value as input. A kernel never spans a cut: the
    cut value is read by the next block's first conv (which fuses nothing before it) and, with
    a residual, by its add, so it is materialised; inside a piece the kernels are what they
    are in the whole network (LightNL's residual add and the block's fuse into the LightNL's
    depthwise kernel when it is there, into the projection's when it is not)."""
    order = list(graph)
    last_use: dict[str, int] = {}
    for i, n in enumerate(order):
        for v in n.inputs:
            last_use[v] = i
    pieces: list[tuple[str, list]] = []
    live = set(graph.inputs)
    start, piece_input = 0, next(iter(graph.inputs))
    for i, n in enumerate(order):
        live.add(n.name)
        live = {v for v in live if last_use.get(v, -1) > i}
        if len(live) == 1 and i + 1 < len(order):
            pieces.append((piece_input, order[start:i + 1]))
            piece_input, start = next(iter(live)), i + 1
    out = []
    for src, nodes in pieces:
        if not any(n.relaxed for n in nodes):
            continue
        g = Graph("window", inputs={src: graph.type_of(src)})
        for n in nodes:
            g.add_node(n.op, n.inputs, dict(n.attrs), name=n.name, type=n.type)
        g.outputs = [nodes[-1].name]
        verify(g)
        out.append(g)
    return out


def _canonical(graph: Graph) -> str:
    """The graph's text with its names replaced by their order of appearance (windows of two
    stages with the same shapes and options are the same kernels)."""
    names: dict[str, str] = {}
    text = render(graph, "text").split("{", 1)[1]
    return re.sub(r"%[A-Za-z0-9_.]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), text)


def space_graphs(graph: Graph, networks: int = 2, seed: int = 0) -> dict[str, Graph]:
    """Every distinct window of the relaxed ``graph`` (:func:`windows`) under every
    combination of its choices, derived, and ``networks`` random sub-networks (the fixed part)."""
    if not graph.relaxed:
        raise AutonlError(f"graph '{graph.name}' has no choices: tune-space tunes a search space (give a relaxed "
                          f"graph, or --space for a discrete one); a single network: autonl compile --tune-trials")
    out: dict[str, Graph] = {}
    seen: set[str] = set()
    for w in windows(graph):
        space = SearchSpace(w)
        for decisions in space.grid():
            g = space.freeze(decisions)
            if not len(g):           # every block of the window removed: nothing to run
                continue
            key = _canonical(g)
            if key not in seen:
                seen.add(key)
                out[f"{w.outputs[0]} {decisions}"] = g
    space = SearchSpace(graph)
    rng = random.Random(seed)
    for i in range(networks):
        out[f"sub-network {i}"] = space.freeze(space.random(rng))
    return out


def space_modules(graph: Graph, target, prepack: bool = True, networks: int = 2, progress: bool = True,
                  layout: str = "nhwc") -> list:
    """The Relax modules (lowered up to tuning) of :func:`space_graphs`."""
    mods = []
    graphs = space_graphs(graph, networks)
    for name, g in tqdm(graphs.items(), desc="lowering the space's blocks", unit="block", disable=not progress,
                        dynamic_ncols=True):
        model = load_model_or_graph(g, 0)
        shape = list(g.inputs[next(iter(g.inputs))].shape)
        mod, _ = to_relax(export_onnx(deploy_model(model)), shape, layout_for(layout, prepack, True), weights=False)
        mods.append(pre_tuning(mod, target, prepack))
    return mods


def tune_space(graph: Graph, out: str | Path, target_name: str, trials_per_task: int, minutes: float | None,
               resume: bool, progress: bool = True, log=lambda m: None, layout: str = "nhwc") -> dict:
    """Tune every distinct workload of the space into the database ``out``; returns the counts."""
    import tvm

    from .targets import get_target
    from .tuning import tune

    target = get_target(target_name)
    if not target.is_host:
        raise AutonlError(f"tuning measures on the target's CPU; target '{target.name}' is not this machine: "
                          f"tune-space --target host")
    tvm_target = tvm.target.Target(target.target_dict())
    mods = space_modules(graph, tvm_target, progress=progress, layout=layout)
    log(f"space '{graph.name}': {len(mods) - 2} distinct windows (blocks between two cuts, under each combination "
        f"of their choices) and 2 random sub-networks")
    return tune(mods, tvm_target, str(out), trials_per_task, progress, minutes, resume)
