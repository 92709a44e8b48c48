"""Measuring a latency table (``autonl latency-table``) and checking one (``autonl latency-check``).

**Blocks.** For every relaxed node and every combination of its choices, the node alone is
made into a small network: an input of the node's real input shape, the node with those
options, and (for an MBConv with a ``skip`` choice) the residual ``add`` that closes its
block. That network goes through the backend's own deploy path (BN folded, LightNL in its
cheaper order, the runtime's fusions) and is timed at batch 1 with the table's threads. A
combination that removes the node (``skip=true``, ``insert=false``) costs 0. Identical
blocks (same op, options and input shape: the repeated MBConvs of a stage) are measured once.

Each entry is the block's time less the runtime's **call overhead** (the time of a network of
one tiny op), which a block inside a network does not pay.

**The fixed part** (stem, head, the blocks the search cannot change, and what a whole
network costs beyond its blocks: its one call into the runtime, layout changes at block
borders) is measured in context: ``calibration`` random sub-networks of the space are timed
end to end together with the blocks, each gives ``measured - sum of its blocks``, and the
median is the table's ``fixed_ms``. For tiny networks it can be negative (the blocks timed
alone still count their borders); the table is refused if its fastest sub-network is not
predicted above 0. Every calibration row is kept in the file. :func:`check_table` samples
*other* sub-networks to test the prediction; :mod:`.timing` says how each time is taken.
"""
from __future__ import annotations

import datetime
import random
import statistics
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from autonl.ir import AutonlError, Graph, Node, atomic_write, render, verify
from autonl.ir.builder import GraphBuilder
from autonl.ir.choice import attr_combinations
from autonl.ir.json_form import graph_to_dict
from autonl.passes import SearchSpace, analyze_cost

from ..base import Backend
from ..loading import load_model_or_graph
from ..manifest import versions
from .table import FORMAT, VERSION, LatencyTable, absent, options_key, space_hash
from .timing import Effort, Measured, Timer, Timing, measure_all


def block_graph(graph: Graph, node: Node, combo: dict[str, Any]) -> Graph | None:
    """The network that times ``node`` with options ``combo`` (None: the options remove it)."""
    if absent(node, combo):
        return None
    block = Graph("block", inputs={"x": graph.type_of(node.inputs[0])})
    b = GraphBuilder(block)
    attrs = {k: v for k, v in combo.items() if k not in ("skip", "insert")}
    out = b.emit(node.op, ["x"], name=node.op, **attrs)
    if node.op == "mbconv" and "skip" in node.choices():
        out = b.emit("add", [out, "x"], name="add")
    block.outputs = [out]
    verify(block)
    return block


def overhead_graph() -> Graph:
    """The smallest network the runtime can run: what a block timed alone pays for its call
    (Python, the runtime's entry, one kernel launch), subtracted from every block."""
    from autonl.ir import TensorType
    graph = Graph("call_overhead", inputs={"x": TensorType("f32", (1, 8, 1, 1))})
    graph.outputs = [GraphBuilder(graph).emit("relu6", ["x"], name="relu6")]
    verify(graph)
    return graph


def graph_timer(graph: Graph, backend: Backend, threads: int, options: dict, rpc: str | None,
                seed: int = 0) -> tuple[Timer, dict]:
    """A discrete graph with random weights (and random BN statistics), compiled by ``backend``
    as it deploys it: the timer of a block, of ``autonl bench`` and of the check."""
    model = load_model_or_graph(graph, seed)
    return backend.latency_timer(model, threads, options, rpc)


def table_probe(table: LatencyTable) -> Graph:
    """The table's probe (:mod:`.timing`): one fixed sub-network of its space at its resolution,
    timed between the models of every measurement that is compared with the table."""
    space = SearchSpace(table.space_graph())
    return space.freeze(space.check(table.doc["probe"]["decisions"], source=f"{table.path} (probe)"))


def time_graphs(graphs: dict[Any, Graph], backend: Backend, threads: int, options: dict, rpc: str | None,
                effort: Effort, what: str, progress: bool = True, probe: Graph | None = None,
                probe_ref_ms: float | None = None) -> tuple[dict[Any, Timing], dict, Measured]:
    """Compile every graph (and the probe), then time them together
    (:func:`~.timing.measure_all`); their timings, the backend's provenance and the run's facts."""
    timers, provenance = {}, {}
    items = list(graphs.items())
    # the first one before the progress bar: a backend option that cannot work (a board's
    # target without --rpc, int8, a missing tuning database) is one line, with no bar before it
    if items:
        timers[items[0][0]], provenance = graph_timer(items[0][1], backend, threads, options, rpc)
    for key, graph in tqdm(items[1:], desc=f"{what}: compiling", unit="net", disable=not progress, leave=False,
                           initial=1, total=len(items)):
        timers[key], provenance = graph_timer(graph, backend, threads, options, rpc)
    probe_timer = graph_timer(probe, backend, threads, options, rpc)[0] if probe is not None else None
    bar = tqdm(total=effort.rounds * len(timers), desc=f"{what}: timing", unit="run", disable=not progress,
               leave=False)

    def tick(done: int, total: int) -> None:
        bar.update(done - bar.n)
    try:
        measured = measure_all(timers, effort, probe_timer, probe_ref_ms, tick)
    finally:
        bar.close()
    return measured.timings, provenance, measured


def build_table(graph: Graph, backend: Backend, threads: int, options: dict | None = None, rpc: str | None = None,
                effort: Effort = Effort(), calibration: int = 5, seed: int = 0, progress: bool = True) -> LatencyTable:
    """Measure the latency table of ``graph`` (relaxed, at the table's resolution)."""
    if not graph.relaxed:
        raise AutonlError(f"graph '{graph.name}' has no choices: a latency table is measured for a search space "
                          f"(give a relaxed graph, or --space for a discrete one)")
    options = dict(options or {})
    space = SearchSpace(graph)
    rows: dict[str, dict] = {}
    blocks: dict[str, Graph] = {}        # block text -> block graph, each measured once
    where: list[tuple[str, dict, str | None]] = []
    for node in graph:
        if not node.relaxed:
            continue
        rows[node.name] = {"op": node.op, "input": list(graph.type_of(node.inputs[0]).shape),
                           "choices": {a: list(c.options) for a, c in node.choices().items()}, "entries": []}
        for combo in attr_combinations(node.attrs):
            block = block_graph(graph, node, combo)
            text = render(block, "text") if block is not None else None
            if text is not None:
                blocks.setdefault(text, block)
            where.append((node.name, {a: combo[a] for a in node.choices()}, text))
    rng = random.Random(seed)
    calib = {f"random {i}": space.random(rng) for i in range(calibration)}
    graphs: dict[Any, Graph] = {("block", text): g for text, g in blocks.items()}
    graphs.update({("net", name): space.freeze(d) for name, d in calib.items()})
    graphs[("overhead",)] = overhead_graph()
    probe_decisions = space.random(random.Random(seed + 7919))
    timings, provenance, run = time_graphs(graphs, backend, threads, options, rpc, effort,
                                           f"latency table ({len(blocks)} blocks)", progress,
                                           probe=space.freeze(probe_decisions))
    overhead = timings[("overhead",)].ms
    for node_name, combo, text in where:
        node = graph.nodes[node_name]
        t = timings.get(("block", text)) if text is not None else None
        rows[node_name]["entries"].append({
            "options_key": options_key(node, {**node.attrs, **combo}), "options": combo,
            # a block never costs less than nothing, however close to the call overhead it runs
            "ms": max(t.ms - overhead, 0.01 * t.ms) if t else 0.0, "p10_ms": t.p10_ms if t else 0.0,
            "p90_ms": t.p90_ms if t else 0.0, "raw_ms": t.raw_ms if t else 0.0, "runs": t.runs if t else 0})
    table = LatencyTable({"format": FORMAT, "version": VERSION, "resolution": graph.inputs[
        next(iter(graph.inputs))].shape[-1], "space_hash": space_hash(graph), "fixed_ms": 0.0,
        "provenance": {}, "nodes": rows})
    calib_rows = []
    for name, decisions in calib.items():
        t = timings[("net", name)]
        summed = table.predict(graph, decisions)
        calib_rows.append({"network": name, "measured_ms": t.ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                           "runs": t.runs, "blocks_ms": summed, "fixed_ms": t.ms - summed, "decisions": decisions})
    fixed = statistics.median(r["fixed_ms"] for r in calib_rows) if calib_rows else 0.0
    table.doc["fixed_ms"] = fixed
    table.doc["call_overhead_ms"] = overhead
    lo, _hi = table.bounds(graph)
    if lo <= 0:
        raise AutonlError(f"the fastest sub-network is predicted at {lo:.4f} ms: its blocks are too small to time "
                          f"apart from the runtime's call overhead (fixed part {fixed:.4f} ms); measure at a higher "
                          f"resolution, or more --rounds on a quieter machine")
    table.doc["probe"] = {**probe_facts(run), "decisions": probe_decisions}
    table.doc["space_graph"] = graph_to_dict(graph)       # latency-check samples from it
    table.doc["fixed"] = {"how": "median over the calibration networks of (end-to-end - sum of their blocks)",
                          "calibration": calib_rows}
    table.doc["provenance"] = {
        **provenance, "resolution": table.resolution, "space": graph.name, "space_hash": table.doc["space_hash"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "effort": effort.as_dict(), "statistic": "lowest round median (see autonl.backends.latency.timing)",
        "blocks_measured": len(blocks), "seed": seed, "options": options, "rpc": rpc,
        "versions": versions("onnxruntime", "apache-tvm")}
    return table


def probe_facts(run: Measured) -> dict:
    return {"network": "a fixed random sub-network of the table's space (decisions in the table's probe)",
            "ms": run.probe_ms, "scaled_to_ms": run.probe_ref_ms,
            "rounds": run.probe_rounds, "slowest_over_best": run.probe_range[1] / run.probe_range[0]}


def write_table(table: LatencyTable, out: str | Path) -> None:
    atomic_write(out, table.dumps())


def sample_decisions(graph: Graph, table: LatencyTable, samples: int, seed: int = 1) -> list[tuple[str, dict]]:
    """``samples`` sub-networks to check a table on: uniform random ones, and a quarter of them
    drawn near the middle of the table's range (uniform sampling piles up in the middle of
    the range only for large spaces; small ones need the help)."""
    space = SearchSpace(graph)
    rng = random.Random(seed)
    lo, hi = table.bounds(graph)
    out = [("random", space.random(rng)) for _ in range(samples - samples // 4)]
    for _ in range(samples // 4):
        best = min((space.random(rng) for _ in range(20)),
                   key=lambda d: abs(table.predict(graph, d) - (lo + hi) / 2))
        out.append(("middle", best))
    return out


def check_table(graph: Graph, table: LatencyTable, backend: Backend, samples: int, options: dict | None = None,
                rpc: str | None = None, effort: Effort = Effort(), seed: int = 1, progress: bool = True) -> dict:
    """Predicted against measured latency of ``samples`` sub-networks (see :func:`sample_decisions`)."""
    import numpy as np
    from scipy.stats import spearmanr

    threads = table.provenance["threads"]
    picked = sample_decisions(graph, table, samples, seed)
    space = SearchSpace(graph)
    nets = {i: space.freeze(d) for i, (_, d) in enumerate(picked)}
    timings, _, run = time_graphs(nets, backend, threads, options or {}, rpc, effort,
                                  f"latency check ({samples} networks)", progress, table_probe(table), table.probe_ms)
    rows = []
    for i, (kind, decisions) in enumerate(picked):
        net, t = nets[i], timings[i]
        rows.append({"sample": kind, "predicted_ms": table.predict(graph, decisions), "measured_ms": t.ms,
                     "p10_ms": t.p10_ms, "p90_ms": t.p90_ms, "raw_ms": t.raw_ms,
                     "macs": analyze_cost(net).macs,
                     "lightnl": sum(1 for n in net if n.op == "lightnl"), "decisions": decisions})
    pred = np.array([r["predicted_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    err = pred / meas - 1
    macs = np.array([r["macs"] for r in rows], dtype=float)
    return {"table": table.path, "backend": table.provenance["backend"], "threads": threads, "samples": len(rows),
            "mape": float(np.mean(np.abs(err))), "max_abs_error": float(np.max(np.abs(err))),
            "bias": float(np.mean(err)),
            "spearman": float(spearmanr(pred, meas).statistic) if len(rows) > 1 else float("nan"),
            "spearman_macs": float(spearmanr(macs, meas).statistic) if len(rows) > 1 else float("nan"),
            "within_5pct": float(np.mean(np.abs(err) <= 0.05)), "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "probe": probe_facts(run), "rows": rows}


def plot_check(result: dict, out: str | Path) -> None:
    """Scatter of predicted against measured milliseconds, with the ±5% and ±10% bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    meas = [r["measured_ms"] for r in rows]
    pred = [r["predicted_ms"] for r in rows]
    lo, hi = min(meas + pred) * 0.95, max(meas + pred) * 1.05
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="predicted = measured")
    for band, style in ((0.05, "--"), (0.10, ":")):
        ax.plot([lo, hi], [lo * (1 + band), hi * (1 + band)], "k" + style, lw=0.6, label=f"±{band:.0%}")
        ax.plot([lo, hi], [lo * (1 - band), hi * (1 - band)], "k" + style, lw=0.6)
    for kind, color in (("random", "tab:blue"), ("middle", "tab:orange")):
        pts = [(r["measured_ms"], r["predicted_ms"]) for r in rows if r["sample"] == kind]
        if pts:
            ax.scatter(*zip(*pts), s=14, color=color, label=f"{kind} sub-networks")
    ax.set_xlim(lo, hi), ax.set_ylim(lo, hi)
    ax.set_xlabel("measured (ms)"), ax.set_ylabel("predicted by the table (ms)")
    ax.set_title(f"{result['backend']}, {result['threads']} thread(s): MAPE {result['mape']:.1%}, "
                 f"Spearman {result['spearman']:.3f}", fontsize=9)
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
