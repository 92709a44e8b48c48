"""The child network of a search run (``autonl derive``): the discrete graph, its weights cut from the supernet, costs, and a
comparison with the published networks (method.md section 4)."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import AutonlError, Graph, build_preset
from autonl.ir.node_cost import format_count
from autonl.ir.decisions import check_decisions, dumps_decisions, load_decisions
from autonl.ir import atomic_write, load_graph, render
from autonl.passes import resize_graph

from ...locks import output_lock
from ..lower import to_torch
from .supernet import Supernet, inherit_weights
from ..train.checkpoint import read_checkpoint
from ..data import read_data_facts
from ..train.weights import check_state_dict, save_model

REFERENCES = ("mobilenetv2", "autonl-s", "autonl-l")


def summary(graph: Graph) -> dict:
    from autonl.passes import analyze_cost
    report = analyze_cost(graph)
    nl = [{"node": n.name, "after": n.inputs[0], "input": str(graph.type_of(n.inputs[0])),
           "r": n.attrs.get("r", 0.25), "s": n.attrs.get("s", 1)} for n in graph if n.op == "lightnl"]
    return {"graph": graph.name, "macs": report.macs, "params": report.params, "lightnl_macs": report.lightnl_macs,
            "blocks": sum(1 for n in graph if n.op == "mbconv"), "lightnl": nl}


def comparison_table(rows: dict[str, dict]) -> str:
    head = f"{'network':<14} {'MACs':>8} {'params':>8} {'blocks':>6} {'LightNL':>7}  LightNL after (r, s)"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        where = ", ".join(f"{x['after']}({x['r']},{x['s']})" for x in r["lightnl"]) or "-"
        lines.append(f"{name:<14} {format_count(r['macs']):>8} {format_count(r['params']):>8} {r['blocks']:>6} "
                     f"{len(r['lightnl']):>7}  {where}")
    return "\n".join(lines)


@dataclass(frozen=True)
class DeriveResult:
    """What :func:`derive_child` wrote: the folder, the resolution and class count its costs
    are counted at, and one :func:`summary` per network (the derived one, then the
    references: MobileNetV2, AutoNL-S, AutoNL-L at the same resolution and classes)."""

    out: str
    resolution: int
    classes: int
    rows: dict[str, dict]

    @property
    def derived(self) -> dict:
        return self.rows["derived"]

    def header(self) -> str:
        return f"at {self.resolution}x{self.resolution}, {self.classes} classes (every row)"

    def table(self) -> str:
        return comparison_table(self.rows)


def derive_child(run_dir: str | Path, out: str | Path, decisions_file: str | Path | None = None,
                  force: bool = False) -> DeriveResult:
    """Write ``out``/ (model folder: graph.json, graph.ir, weights.pt; decisions.json,
    cost.json, comparison.json, comparison.txt). All or nothing: it is assembled in a
    temporary folder beside ``out`` and renamed into place, under the lock of ``out``
    (:mod:`autonl.backends.locks`)."""
    with output_lock(out, "derive"):
        return _derive_child(run_dir, out, decisions_file, force)


def _search_result(run: Path) -> dict:
    """The run's result.json (empty when the search did not finish or the file is unreadable)."""
    from autonl.ir.json_file import read_json_file
    try:
        doc = read_json_file(run / "result.json", "search result")
    except AutonlError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _derive_child(run_dir: str | Path, out: str | Path, decisions_file: str | Path | None, force: bool) -> DeriveResult:
    from autonl.passes.derive import Derive

    run, out = Path(run_dir), Path(out)
    for name in ("search_graph.json", "checkpoint.pt"):
        if not (run / name).exists():
            raise AutonlError(f"{run}: not a search run folder (no {name})")
    if out.exists() and not force:
        raise AutonlError(f"{out} already exists; pick another --out, or pass --force to replace it")
    graph = load_graph(run / "search_graph.json")
    source = str(decisions_file or run / "decisions.json")
    decisions = load_decisions(source)
    check_decisions(graph, decisions, source=source)
    ckpt = read_checkpoint(run / "checkpoint.pt")
    if ckpt.get("kind") != "search":
        raise AutonlError(f"{run / 'checkpoint.pt'}: not a search checkpoint")
    config = ckpt.get("config", {})
    cost_res = config.get("cost_resolution")
    searched = _search_result(run)
    if config.get("latency_table"):     # a latency search counts its cost at its table's resolution
        cost_res = searched.get("cost_resolution", cost_res)
    supernet = Supernet(graph)
    check_state_dict(ckpt["model"], supernet, str(run / "checkpoint.pt"), graph.name)
    supernet.load_state_dict(ckpt["model"])
    derived = Derive(decisions)(graph).graph
    derived.name = "derived"
    module = to_torch(derived)
    module.load_state_dict(inherit_weights(supernet, module))

    at = (lambda g: resize_graph(g, cost_res)) if cost_res else (lambda g: g)
    resolution = cost_res or graph.inputs[next(iter(graph.inputs))].shape[-1]
    rows = {"derived": summary(at(derived))}
    classes = derived.type_of(derived.outputs[0]).shape[-1]
    for ref in REFERENCES:     # at the derived network's class count: a 1000-way head is 1.28M MACs of its own
        rows[ref] = summary(build_preset(ref, resolution=resolution, num_classes=classes))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model(derived, module.eval(), tmp, read_data_facts(run))
        atomic_write(tmp / "decisions.json", dumps_decisions(decisions))
        cost = {"resolution": resolution, "search_resolution": graph.inputs[next(iter(graph.inputs))].shape[-1],
                **rows["derived"], "target_macs": config.get("target_macs"),
                **{k: searched[k] for k in ("target_latency_ms", "predicted_latency_ms", "latency_of") if k in searched}}
        atomic_write(tmp / "cost.json", json.dumps(cost, indent=1) + "\n")
        atomic_write(tmp / "comparison.json", json.dumps(rows, indent=1) + "\n")
        atomic_write(tmp / "comparison.txt", f"at {resolution}x{resolution}, {classes} classes\n"
                     + comparison_table(rows) + "\n")
        atomic_write(tmp / "graph_at_cost_resolution.ir", render(at(derived), "text"))
        from autonl.backends.manifest import write_run_manifest
        write_run_manifest(tmp, "derive", {"run": str(run_dir), "decisions": str(decisions_file or "decisions.json"),
                                           "cost_resolution": resolution}, config.get("seed"))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DeriveResult(str(out), resolution, classes, rows)
