"""Measuring a latency table (``autonl latency-table``) and checking one (``autonl latency-check``).

**Blocks, in context.** For every relaxed node and every combination of its choices, the
node is timed as a network runs it (:func:`context_graphs`): between a 1x1 convolution before
it (standing for the block that feeds it) and one after it (for the block it feeds), less
the same two convolutions without it. Both go through the backend's own deploy path (BN
folded, LightNL in its cheaper order, the runtime's fusions) and are timed at batch 1 with
the table's threads. A block with a ``skip`` choice carries the residual ``add`` that closes
it. A combination that removes the node (``skip=true``, ``insert=false``) costs 0. Identical
blocks (same op, options and input shape: the repeated MBConvs of a stage) are measured once.
Timed alone, as earlier versions did, a block paid what it does not pay inside a network:
its own call into the runtime, and onnxruntime's layout changes at the model's borders (it
runs convolutions in a blocked NCHWc layout): 10-15% of a 56x56 or 112x112 MBConv, measured,
so networks the search finds (heavy early blocks, little late) were predicted 8-12% slow.

**The network around the blocks.** A whole network is more than its blocks: a fixed part
(stem, head, the blocks the search cannot change, its one call into the runtime), and blocks
that do not find the caches as a block run over and over leaves them. So ``calibration``
sub-networks spanning the space (:func:`calibration_decisions`: its smallest and largest, and
others at even steps of MACs between) are timed end to end together with the blocks, and a
line is fitted through them (robustly, :func:`fit_context`)::

    measured = fixed_ms + scale * (sum of the blocks as measured)

The table's entries are ``ms = scale * measured_ms`` (``measured_ms`` kept beside) and
``fixed_ms`` is the intercept, so the prediction keeps the gate-product form. With fewer than
3 calibration networks (or a fit outside 0.5..2) ``scale`` is 1 and ``fixed_ms`` the median of
``measured - blocks``. A negative intercept is refitted through the origin (a fixed part
cannot take time away); the table is refused if its fastest sub-network is still not
predicted above 0. Every calibration row is kept
in the file. :func:`check_table` samples *other* sub-networks to test the prediction;
:mod:`.timing` says how each time is taken.
"""
from __future__ import annotations

import sys

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
from .timing import Effort, Measured, ModelLatency, Timer, measure_all


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


def context_graphs(graph: Graph, node: Node, combo: dict[str, Any]) -> tuple[Graph, Graph] | None:
    """The two networks whose difference is ``node`` with options ``combo`` as a network runs
    it (None: the options remove it): the block between a 1x1 convolution before it (standing
    for the block that feeds it) and one after it (for the block it feeds), and the same two
    convolutions without the block (the one after taking the block's stride, so that both end
    in the same shape). Timed alone, a block paid what it does not pay inside a network: its
    own call into the runtime, and layout changes at its borders (onnxruntime runs convolutions
    in a blocked NCHWc layout and converts at the model's input and output: 10-15% of a 56x56
    or 112x112 MBConv)."""
    block = block_graph(graph, node, combo)
    if block is None:
        return None
    x = graph.type_of(node.inputs[0])
    y = block.type_of(block.outputs[0])
    stride = x.shape[2] // y.shape[2]
    attrs = {k: v for k, v in combo.items() if k not in ("skip", "insert")}

    def make(with_block: bool) -> Graph:
        g = Graph("block_in_context" if with_block else "context", inputs={"x": x})
        b = GraphBuilder(g)
        v = before = b.emit("conv2d", ["x"], name="before", out=x.shape[1], k=1)
        after = {"out": y.shape[1], "k": 1}
        if with_block:
            v = b.emit(node.op, [before], name=node.op, **attrs)
            if node.op == "mbconv" and "skip" in node.choices():
                v = b.emit("add", [v, before], name="add")
        elif stride > 1:
            after["s"] = stride
        g.outputs = [b.emit("conv2d", [v], name="after", **after)]
        verify(g)
        return g
    return make(True), make(False)


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
                probe_ref_ms: float | None = None) -> tuple[dict[Any, ModelLatency], dict, Measured]:
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
        if bar.total != total:      # extra rounds for models whose best round stands alone
            bar.total = total
        bar.update(done - bar.n)
    try:
        measured = measure_all(timers, effort, probe_timer, probe_ref_ms, tick)
    finally:
        bar.close()
    if rpc is None and measured.busy_warning(threads):
        print(measured.busy_warning(threads), file=sys.stderr)
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
    blocks: dict[str, Graph] = {}        # block in context: text -> graph, each measured once
    contexts: dict[str, Graph] = {}      # the same without the block
    where: list[tuple[str, dict, tuple[str, str] | None]] = []
    for node in graph:
        if not node.relaxed:
            continue
        rows[node.name] = {"op": node.op, "input": list(graph.type_of(node.inputs[0]).shape),
                           "choices": {a: list(c.options) for a, c in node.choices().items()}, "entries": []}
        for combo in attr_combinations(node.attrs):
            pair = context_graphs(graph, node, combo)
            texts = None
            if pair is not None:
                texts = (render(pair[0], "text"), render(pair[1], "text"))
                blocks.setdefault(texts[0], pair[0])
                contexts.setdefault(texts[1], pair[1])
            where.append((node.name, {a: combo[a] for a in node.choices()}, texts))
    calib = calibration_decisions(graph, calibration, seed)
    graphs: dict[Any, Graph] = {("block", text): g for text, g in blocks.items()}
    graphs.update({("context", text): g for text, g in contexts.items()})
    graphs.update({("net", name): space.freeze(d) for name, d in calib.items()})
    probe_decisions = space.random(random.Random(seed + 7919))
    timings, provenance, run = time_graphs(graphs, backend, threads, options, rpc, effort,
                                           f"latency table ({len(blocks)} blocks)", progress,
                                           probe=space.freeze(probe_decisions))
    for node_name, combo, texts in where:
        node = graph.nodes[node_name]
        t = timings[("block", texts[0])] if texts else None
        c = timings[("context", texts[1])] if texts else None
        # a block never costs less than nothing, however close to its context's time it runs
        measured = max(t.ms - c.ms, 0.01 * t.ms) if t else 0.0
        rows[node_name]["entries"].append({
            "options_key": options_key(node, {**node.attrs, **combo}), "options": combo,
            "ms": measured, "measured_ms": measured, "with_context_ms": t.ms if t else 0.0,
            "context_ms": c.ms if c else 0.0, "p10_ms": t.p10_ms if t else 0.0,
            "p90_ms": t.p90_ms if t else 0.0, "raw_ms": t.raw_ms if t else 0.0, "runs": t.runs if t else 0})
    table = LatencyTable({"format": FORMAT, "version": VERSION, "resolution": graph.inputs[
        next(iter(graph.inputs))].shape[-1], "space_hash": space_hash(graph), "fixed_ms": 0.0,
        "provenance": {}, "nodes": rows})
    calib_rows = []
    for name, decisions in calib.items():
        t = timings[("net", name)]
        summed = table.predict(graph, decisions)         # the blocks as measured (fixed 0, scale 1)
        calib_rows.append({"network": name, "measured_ms": t.ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                           "runs": t.runs, "blocks_ms": summed, "decisions": decisions})
    fixed, scale, how = fit_context(calib_rows)
    for r in calib_rows:
        r["predicted_ms"] = fixed + scale * r["blocks_ms"]
    for row in rows.values():
        for e in row["entries"]:
            e["ms"] = scale * e["measured_ms"]
    table.doc["fixed_ms"] = fixed
    lo, _hi = table.bounds(graph)
    if lo <= 0:
        raise AutonlError(f"the fastest sub-network is predicted at {lo:.4f} ms: its blocks are too small to time "
                          f"apart from their context (fixed part {fixed:.4f} ms); measure at a higher "
                          f"resolution, or more --rounds on a quieter machine")
    table.doc["probe"] = {**probe_facts(run), "decisions": probe_decisions}
    table.doc["space_graph"] = graph_to_dict(graph)       # latency-check samples from it
    table.doc["fixed"] = {"how": how, "scale": scale, "fixed_ms": fixed, "calibration": calib_rows}
    table.doc["provenance"] = {
        **provenance, "resolution": table.resolution, "space": graph.name, "space_hash": table.doc["space_hash"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "effort": effort.as_dict(), "statistic": "lowest round median (see autonl.backends.latency.timing)",
        "blocks_measured": len(blocks), "seed": seed, "options": options, "rpc": rpc,
        "versions": versions("onnxruntime", "apache-tvm")}
    return table


def calibration_decisions(graph: Graph, count: int, seed: int = 0) -> dict[str, dict]:
    """``count`` sub-networks of ``graph`` that span its range, to fit the table's context
    line on (:func:`fit_context`): its smallest and its largest by MACs (every relaxed node at
    its cheapest, then its dearest combination), and random ones picked to fall at even steps
    of MACs between the two (uniform draws pile up in the middle). One: a random one."""
    space = SearchSpace(graph)
    rng = random.Random(seed)
    if count == 1:
        return {"random 0": space.random(rng)}
    macs: dict[str, list[tuple[int, dict]]] = {}
    for node in graph:
        if node.relaxed:
            options = []
            for combo in attr_combinations(node.attrs):
                block = block_graph(graph, node, combo)
                options.append((analyze_cost(block).macs if block is not None else 0,
                                {a: combo[a] for a in node.choices()}))
            macs[node.name] = options

    def total(decisions: dict) -> int:
        return sum(next(m for m, c in macs[n] if c == decisions[n]) for n in macs)

    smallest = {n: min(o, key=lambda mc: mc[0])[1] for n, o in macs.items()}
    largest = {n: max(o, key=lambda mc: mc[0])[1] for n, o in macs.items()}
    out = {"smallest": smallest, "largest": largest}
    lo, hi = total(smallest), total(largest)
    pool = [space.random(rng) for _ in range(40 * count)]
    for i in range(1, count - 1):
        want = lo + (hi - lo) * i / (count - 1)
        best = min(pool, key=lambda d: abs(total(d) - want))
        pool.remove(best)
        out[f"at {i}/{count - 1} of the MAC range"] = best
    return out


def fit_context(rows: list[dict]) -> tuple[float, float, str]:
    """(fixed_ms, scale, how): the line ``measured = fixed_ms + scale * blocks_ms`` through
    the calibration rows, fitted robustly (Theil-Sen: the median of the slopes between every
    two rows, so one network off the line does not tilt it; least squares did: one LightNL-
    heavy network set the slope to 1.11 where the others lay on 1.01, and the check's MAPE
    went from 1.7% to 2.0%); scale 1 and the median offset with fewer than 3 rows, too little
    spread between them, or a slope outside 0.5..2 (a fit that noise made).

    A fixed part cannot take time away (a stem, a head, a call into the runtime), so a line
    whose intercept comes out negative is fitted again through the origin (scale: the median
    of end-to-end / blocks). At 32x32, with 3 calibration networks on a busy 2-CPU machine,
    Theil-Sen's intercept came out at -0.003 to -0.14 ms: the line then predicted the
    smallest network at half its measured time, or below 0 (and the table was refused)."""
    import numpy as np
    from scipy.stats import theilslopes

    blocks = np.array([r["blocks_ms"] for r in rows], dtype=float)
    measured = np.array([r["measured_ms"] for r in rows], dtype=float)
    median = "scale 1, fixed_ms = median over the calibration networks of (end-to-end - sum of their blocks)"
    if len(rows) >= 3 and blocks.max() - blocks.min() > 0.2 * blocks.mean():
        fit = theilslopes(measured, blocks)
        scale, fixed = fit.slope, fit.intercept
        how = ("Theil-Sen line through the calibration networks: end-to-end = "
               "fixed_ms + scale x (sum of their blocks as measured in context)")
        if fixed < 0 and (blocks > 0).any():
            scale = float(np.median(measured[blocks > 0] / blocks[blocks > 0]))
            how = (f"line through the origin (the Theil-Sen intercept, {fixed:.4f} ms, was negative, and a fixed "
                   f"part cannot take time away): end-to-end = scale x (sum of the blocks as measured in context), "
                   f"scale = median over the calibration networks of end-to-end / blocks")
            fixed = 0.0
        if 0.5 <= scale <= 2.0:
            return float(fixed), float(scale), how
        median += f" (the fitted slope, {scale:.2f}, was outside 0.5..2)"
    return (float(statistics.median(measured - blocks)) if len(rows) else 0.0), 1.0, median


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
