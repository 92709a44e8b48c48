"""The latency commands' work: ``autonl latency-table`` (a search space's blocks timed on a
runtime, :func:`measure_latency_table`, its :class:`TableResult`), ``autonl tune-space`` (one
TVM database for a whole space, :func:`tune_space_db`, its :class:`TuneResult`),
``autonl latency-check`` (a table's predictions against whole networks timed end to end,
:func:`check_latency_table`, its :class:`CheckResult`) and ``autonl bench`` (models as
deployed, timed as the tables time their blocks, :func:`bench_sources`, its
:class:`BenchResult`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autonl.ir import AutonlError

from autonl.backends.base import Backend

from .folders import check_out_file
from .sources import load_deployable, space_graph

if TYPE_CHECKING:
    from autonl.backends.latency.timing import ModelLatency

__all__ = ["BenchResult", "BenchRow", "CheckResult", "TUNING_FILES", "TableResult", "TuneResult", "bench_sources",
           "check_latency_table", "check_table_request", "check_tune_request", "measure_latency_table",
           "read_table_file", "tune_space_db", "write_check_plot"]


def _effort(rounds: int):
    from autonl.backends.latency import Effort
    return Effort(rounds=rounds)


def _threads(threads: int | None) -> int:
    return threads or os.cpu_count() or 1


def read_table_file(path: str):
    """The latency table in ``path`` (:class:`~autonl.backends.latency.LatencyTable`), or one
    line saying why it is not one: what a command given ``--latency-table`` checks first."""
    from autonl.backends.latency import LatencyTable
    return LatencyTable.read(path)


@dataclass(frozen=True)
class TableResult:
    """A latency table written to ``out``: what it was measured with (``description``), its
    searchable nodes, entries and distinct blocks timed, its fixed part, and the latencies of
    the space's fastest and slowest sub-networks it predicts."""

    out: str
    description: str
    nodes: int
    entries: int
    blocks_measured: int
    fixed_ms: float
    low_ms: float
    high_ms: float


def check_table_request(out: str, backend: Backend, rpc_addr: str | None) -> None:
    """Before any work (and before the lock): ``out`` a file in a folder that exists, and
    ``rpc_addr`` a TVM RPC server that answers."""
    from autonl.backends.tvm.timer import rpc_session

    check_out_file(out)
    if rpc_addr is not None:
        if backend.name != "tvm":
            raise AutonlError("--rpc times on a TVM RPC server: use it with --backend tvm")
        rpc_session(rpc_addr)          # an unreachable server: one line now, before any work


def measure_latency_table(source: str, space: str, resolution: int | None, width: float | None,
                          classes: int | None, backend: Backend, threads: int | None, options: dict,
                          rpc_addr: str | None, rounds: int, calibration: int, out: str) -> TableResult:
    """Time every block of ``source``'s space (:func:`~autonl.workflows.sources.space_graph`)
    on ``backend`` with ``options`` (on the RPC server ``rpc_addr`` if given), plus the fixed
    part in context from ``calibration`` whole sub-networks; write the table to ``out``."""
    from autonl.backends.latency.measure import build_table, write_table

    graph = space_graph(source, space, resolution, width, classes)
    table = build_table(graph, backend, _threads(threads), options, rpc_addr, _effort(rounds), calibration)
    table.path = out
    write_table(table, out)
    lo, hi = table.bounds(graph)
    n = sum(len(r["entries"]) for r in table.doc["nodes"].values())
    return TableResult(out, table.describe(), len(table.doc["nodes"]), n, table.provenance["blocks_measured"],
                       table.fixed_ms, lo, hi)


@dataclass(frozen=True)
class TuneResult:
    """A tuning database: distinct workloads, those that had records already, the new
    trials and their seconds, and the workloads the database now covers."""

    out: str
    tasks: int
    tasks_with_records: int
    trials_run: int
    seconds: float
    tasks_covered: int


# what a MetaSchedule database folder holds (and tune-space's plan): a folder with none of them
# is someone else's (a model folder, a deploy folder, a home), never written into
TUNING_FILES = ("database_workload.json", "database_tuning_record.json", "tuning_plan.json")


def check_tune_request(target_name: str, out: str, tune_trials: int | None, tune_minutes: float | None,
                       resume: bool) -> None:
    """Before any work (and before the lock): a known target, a tuning budget, the folder of
    ``out``, and with ``resume`` a plan in ``out`` to finish."""
    from autonl.backends.tvm.targets import get_target

    get_target(target_name)       # an unknown target: one line, before any work
    if not tune_trials and not tune_minutes and not resume:
        raise AutonlError("give a tuning budget: --tune-trials N and/or --tune-minutes M (or --resume)")
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise AutonlError(f"--out {out}: folder {parent} does not exist")
    if resume:
        from autonl.backends.tvm.tuning import require_plan
        require_plan(out)


def _refuse_other_folder(out: str) -> None:
    """--out of tune-space: a new or empty folder, or a tuning database; one line otherwise."""
    folder = Path(out)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise AutonlError(f"--out {out}: exists and is not a folder; give a new folder or a tuning database")
    entries = sorted(e.name for e in folder.iterdir())
    if entries and not any(name in entries for name in TUNING_FILES):
        shown = ", ".join(entries[:3]) + (f" (+{len(entries) - 3} more)" if len(entries) > 3 else "")
        raise AutonlError(f"--out {out}: holds {shown} but no tuning database ({TUNING_FILES[0]}); give a new "
                          f"folder, or a tuning database to add to")


def tune_space_db(source: str, space: str, resolution: int | None, width: float | None, classes: int | None,
                  out: str, target_name: str, tune_trials: int | None, tune_minutes: float | None, resume: bool,
                  log=lambda m: None, layout: str = "nhwc") -> TuneResult:
    """Tune every distinct kernel of ``source``'s space (and of its fixed part) once, into the
    database folder ``out`` (a new or empty folder, or a database to add to)."""
    from autonl.backends.tvm.space import tune_space

    _refuse_other_folder(out)
    graph = space_graph(source, space, resolution, width, classes)
    info = tune_space(graph, out, target_name, tune_trials, tune_minutes, resume, log=log, layout=layout)
    return TuneResult(out, info["tasks"], info["tasks_with_records"], info["trials_run"], info["seconds"],
                      info["tasks_covered"])


@dataclass(frozen=True)
class CheckResult:
    """A latency table checked: what it was measured with, its probe's latency, and
    ``stats``, the check as ``--json`` writes it (samples, mape, spearman, spearman_macs,
    within_5pct, within_10pct, max_abs_error, bias, probe, every sample)."""

    description: str
    table_probe_ms: float
    stats: dict


def check_latency_table(table_file: str, samples: int, rounds: int, seed: int) -> CheckResult:
    """Sample ``samples`` sub-networks of the table's space, time each end to end with the
    table's backend, options and threads, and compare with the table's predictions."""
    from autonl.backends.catalog import get_backend
    from autonl.backends.latency import LatencyTable
    from autonl.backends.latency.measure import check_table

    table = LatencyTable.read(table_file)
    graph = table.space_graph()
    prov = table.provenance
    stats = check_table(graph, table, get_backend(prov["backend"]), samples, prov.get("options") or {},
                        prov.get("rpc"), _effort(rounds), seed)
    return CheckResult(table.describe(), table.probe_ms, stats)


def write_check_plot(result: CheckResult, plot: str) -> None:
    """The check's scatter plot (predicted against measured) as a PNG."""
    from autonl.backends.latency.measure import plot_check
    plot_check(result.stats, plot)


@dataclass(frozen=True)
class BenchRow:
    """One model timed by :func:`bench_sources`: its latency and MACs (None when unknown)."""

    source: str
    latency: ModelLatency
    macs: float | None


@dataclass(frozen=True)
class BenchResult:
    """What :func:`bench_sources` measured: a row per model, the runtime (``provenance``) and
    threads, the warning to print when other processes kept the CPUs busy, the probe's
    latency here and in the table scaled to (None without ``--table``), and ``doc``, the
    result as ``--json`` writes it."""

    rows: list[BenchRow]
    provenance: dict
    threads: int
    busy_warning: str | None
    probe_ms: float | None
    ref_ms: float | None
    doc: dict


def _read_reference(table_file: str | None, backend: Backend, threads: int):
    """The probe latency and probe network of the table to scale to (None, None without)."""
    from autonl.backends.latency import LatencyTable
    from autonl.backends.latency.measure import table_probe

    if not table_file:
        return None, None
    table = LatencyTable.read(table_file)
    if table.provenance["backend"] != backend.name or table.provenance["threads"] != threads:
        raise AutonlError(f"{table_file} was measured with {table.describe()}; bench with the same backend and "
                          f"--threads {table.provenance['threads']}")
    return table.probe_ms, table_probe(table)


def _bench_timers(sources, backend: Backend, options: dict, rpc_addr: str | None, threads: int, seed: int,
                  preset: tuple) -> tuple[dict, dict, dict]:
    """``(timers, facts, provenance)`` of ``sources``: each ONNX model (a deploy folder's, a
    .onnx file) in an onnxruntime session, every other source compiled by ``backend``."""
    from autonl.passes import analyze_cost

    models, timers, provenance, facts = {}, {}, {}, {}
    for source in sources:
        onnx_files = _onnx_models(source)
        if onnx_files is not None:      # a deploy folder of the ONNX backend, or a .onnx file
            if backend.name != "onnx" or rpc_addr:
                raise AutonlError(f"{source}: an ONNX model is timed with onnxruntime here: --backend onnx, no --rpc")
            for key, (timer, fact) in _onnx_timers(source, onnx_files, threads).items():
                timers[key], facts[key] = timer, fact
            continue
        model = load_deployable(source, *preset, seed)
        if model.graph.inputs[next(iter(model.graph.inputs))].shape[0] != 1:
            raise AutonlError(f"{source}: autonl bench times batch 1 (latency); build the model with --batch 1")
        models[source] = model
        cost = analyze_cost(model.graph)
        facts[source] = {"graph": model.graph.name, "macs": cost.macs,
                         "lightnl_blocks": sum(1 for n in model.graph if n.op == "lightnl")}
    for source, model in models.items():
        timers[source], provenance = backend.latency_timer(model, threads, options, rpc_addr)
    if not provenance and backend.name == "onnx":
        import onnxruntime
        provenance = {"backend": "onnx", "runtime": "onnxruntime", "runtime_version": onnxruntime.__version__,
                      "threads": threads, "clock": "wall time around InferenceSession.run",
                      "thread_pool": f"one shared intra-op pool of {threads} thread(s), spinning"}
    return timers, facts, provenance


def bench_sources(sources, backend: Backend, options: dict, rpc_addr: str | None = None, threads: int | None = None,
                  rounds: int = 20, table_file: str | None = None, seed: int = 0,
                  preset: tuple = (None, None, None, None)) -> BenchResult:
    """Time ``sources`` together, round by round, at batch 1, as deployed by ``backend`` with
    ``options`` (``preset``: resolution, width, batch, classes of presets and graph files);
    scaled to ``table_file``'s machine speed by its probe network when given."""
    from autonl.backends.latency.measure import graph_timer, probe_facts
    from autonl.backends.latency.timing import measure_all

    n = _threads(threads)
    ref, probe = _read_reference(table_file, backend, n)
    timers, facts, provenance = _bench_timers(sources, backend, options, rpc_addr, n, seed, preset)
    if probe is not None:
        probe, _ = graph_timer(probe, backend, n, options, rpc_addr)
    run = measure_all(timers, _effort(rounds), probe, ref)
    rows, docs = [], []
    for key, fact in facts.items():
        t = run.timings[key]
        docs.append({"source": key, **fact, **t.as_dict()})
        rows.append(BenchRow(key, t, fact["macs"] if isinstance(fact.get("macs"), (int, float)) else None))
    doc = {**(docs[0] if len(docs) == 1 else {}), "models": docs, "provenance": provenance,
           "probe": probe_facts(run) if probe is not None else None,
           "scaled_to": f"the probe of {table_file}" if table_file else "not scaled (no --table)",
           "machine": {"cpus": run.cpus, "others_busy_cpus": None if rpc_addr else run.others_cpus}}
    return BenchResult(rows, provenance, n, run.busy_warning(n) if rpc_addr is None else None,
                       run.probe_ms if probe is not None else None, ref, doc)


def _onnx_models(source: str) -> dict | None:
    """``{label: file name}`` of the ONNX models ``source`` holds: a deploy folder written by
    ``autonl compile --backend onnx`` (fp32, and int8 where it has one) or a ``.onnx`` file;
    None for any other source."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return {"onnxruntime": path.name}
    if path.is_dir() and (path / "manifest.json").is_file() and (path / "model.onnx").is_file():
        return {label: name for label, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))
                if (path / name).is_file()}
    return None


def _onnx_timers(source: str, files: dict, threads: int) -> dict:
    """``{"SOURCE (fp32)": (timer, facts), ...}``: each model in an onnxruntime session on the
    shared timing pool of ``threads`` threads, batch 1 (a deploy folder's files checked
    against its manifest first: size and sha256)."""
    import numpy as np

    from autonl.backends.latency.timing import wall_timer
    from autonl.backends.manifest import read_manifest, verified_bytes
    from autonl.backends.onnx.runtime import session

    path = Path(source)
    manifest = read_manifest(path) if path.is_dir() else None
    out = {}
    for label, name in files.items():
        src = verified_bytes(path, name, manifest) if manifest is not None else path
        sess = session(src, threads=threads, name=str(path / name if manifest is not None else path), shared=True)
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) or i == 0 else d for i, d in enumerate(inp.shape)]
        if len(shape) != 4 or any(d < 1 for d in shape):
            raise AutonlError(f"{source}: the model's input {inp.name} has shape {inp.shape}; bench times NCHW image "
                              "models")
        if shape[0] != 1:
            raise AutonlError(f"{source}: its input has batch {shape[0]}; autonl bench times batch 1 (latency)")
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feed = {inp.name: x}
        key = f"{source} ({label})" if manifest is not None else source
        fact = {"graph": (manifest or {}).get("graph", path.stem), "model_file": name,
                "macs": (manifest or {}).get("macs")}
        out[key] = (wall_timer(lambda s=sess, f=feed: s.run(None, f)), fact)
    return out
