"""Latency commands: ``latency-table`` (per-block latency of a search space on a runtime),
``latency-check`` (the table's predictions against whole networks measured end to end) and
``bench`` (one model's latency as deployed, the same measurement)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from autonl.ir import AutonlError
from autonl.workflows.sources import load_deployable, space_graph

from autonl.backends.catalog import get_backend
from autonl.backends.torch.config import RESOLUTION, SEED
from autonl.backends.tvm.options import TvmOptions
from autonl.ir.ranges import Range

from .app import cli
from .deploy_cmds import options_flags, options_for, timing_backend_options
from .options import CLASSES, THREADS, WIDTH, lock_output, ranged, with_preset_options, write_json

ROUNDS = Range(1, 1000)
SAMPLES = Range(2, 100000)
CALIBRATION = Range(1, 1000)


def _effort(rounds: int):
    from autonl.backends.latency import Effort
    return Effort(rounds=rounds)


def _out_file(path: str) -> None:
    """Refuse an output file in a folder that does not exist, before any work."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise AutonlError(f"--out {path}: folder {parent} does not exist")
    if Path(path).is_dir():
        raise AutonlError(f"--out {path} is a folder; give a file name, e.g. {Path(path) / 'table.json'}")


def _threads(threads: int | None) -> int:
    return threads or os.cpu_count() or 1


@cli.command("latency-table")
@click.argument("source", metavar="[SOURCE]", default="search-space")
@click.option("--backend", default="onnx", show_default=True, help="onnx (onnxruntime) or tvm.")
@click.option("--rpc", "rpc_addr", metavar="HOST:PORT",
              help="TVM: build the blocks for --target and time them on this RPC server (the board).")
@click.option("--threads", type=ranged(THREADS), help="Threads the runtime uses [default: this machine's CPUs].")
@click.option("--resolution", "-r", type=ranged(RESOLUTION),
              help="Input size the table is measured at; the search counts its cost at it [default: 224 for "
                   "presets, a graph file's own].")
@click.option("--width", "-w", type=ranged(WIDTH), help="Width multiplier for presets.")
@click.option("--classes", type=ranged(CLASSES),
              help="Classes of the network (presets; default 1000; the search's data decides, e.g. 10 for digits).")
@click.option("--space", default="autonl", show_default=True,
              help="Search-space file (TOML/JSON) or built-in name (autonl; lightnl-only: LightNL placement only, "
                   "your blocks kept), for graphs without choices.")
@click.option("--rounds", type=ranged(ROUNDS), default=9, show_default=True,
              help="Interleaved timing rounds per block (more: steadier on a busy machine).")
@click.option("--calibration", type=ranged(CALIBRATION), default=12, show_default=True,
              help="Whole sub-networks (the space's smallest, its largest, others between) timed with the "
                   "blocks to fit the blocks in context and the fixed part.")
@click.option("--out", "-o", "out", required=True, type=click.Path(), help="The table (JSON).")
@timing_backend_options
def latency_table(source, backend, rpc_addr, threads, resolution, width, classes, space, rounds, calibration, out,
                  **options):
    """Measure a latency table: every block of a search space (every relaxed node, every
    combination of its options, in its real input shape, compiled as the backend deploys it)
    timed on the runtime, plus the fixed part in context. `autonl search --target-latency`
    predicts from it; `autonl latency-check` tests it."""
    from autonl.backends.latency.measure import build_table, write_table
    from autonl.backends.tvm.timer import rpc_session

    chosen = get_backend(backend)
    given = options_for(chosen, options, timing=True)
    _out_file(out)
    if rpc_addr is not None:
        if chosen.name != "tvm":
            raise AutonlError("--rpc times on a TVM RPC server: use it with --backend tvm")
        rpc_session(rpc_addr)          # an unreachable server: one line now, before any work
    lock_output(out, "latency-table", inputs=(source, space))
    graph = space_graph(source, space, resolution, width, classes)
    table = build_table(graph, chosen, _threads(threads), given, rpc_addr, _effort(rounds), calibration)
    table.path = out
    write_table(table, out)
    lo, hi = table.bounds(graph)
    n = sum(len(r["entries"]) for r in table.doc["nodes"].values())
    click.echo(f"{table.describe()}: {len(table.doc['nodes'])} searchable nodes, {n} entries "
               f"({table.provenance['blocks_measured']} distinct blocks timed), fixed part {table.fixed_ms:.3f} ms; "
               f"sub-networks from {lo:.3f} ms to {hi:.3f} ms")
    click.echo(f"wrote {out}")


@cli.command("tune-space")
@click.argument("source", metavar="[SOURCE]", default="search-space")
@options_flags(TvmOptions, {"target": "A named TVM target (autonl targets); tuning measures on this machine: host."},
               decls={"target": ("--target", "target_name")})
@click.option("--resolution", "-r", type=ranged(RESOLUTION),
              help="Input size the space's networks will run at [default: 224 for presets, a graph file's own].")
@click.option("--width", "-w", type=ranged(WIDTH), help="Width multiplier for presets.")
@click.option("--classes", type=ranged(CLASSES), help="Classes of the network (presets; default 1000).")
@click.option("--space", default="autonl", show_default=True,
              help="Search-space file (TOML/JSON) or built-in name (autonl; lightnl-only: LightNL placement only, "
                   "your blocks kept), for graphs without choices.")
@options_flags(TvmOptions, {
    "tune_trials": "Trials, on average per distinct workload (spread by share of the untuned time).",
    "tune_minutes": "A tuning budget in minutes.",
    "resume": "Finish the interrupted tuning run in --out.",
    "layout": "The layout of the kernels (as autonl compile --backend tvm --layout)."})
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False),
              help="The tuning database folder (an existing database is added to: workloads with records are "
                   "not tuned again).")
def tune_space_cmd(source, target_name, resolution, width, classes, space, tune_trials, tune_minutes, resume,
                   layout, out):
    """Tune one TVM database for a whole search space: every distinct kernel of its blocks (and
    of its fixed part), once. Any network derived from the space then compiles with
    `autonl compile --backend tvm --tuning-dir OUT` and no new trials."""
    from autonl.backends.tvm.space import tune_space
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
    lock_output(out, "tune-space", inputs=(source, space))
    _refuse_other_folder(out)
    graph = space_graph(source, space, resolution, width, classes)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    info = tune_space(graph, out, target_name, tune_trials, tune_minutes, resume, log=log, layout=layout)
    click.echo(f"{info['tasks']} distinct workloads ({info['tasks_with_records']} already in the database); "
               f"{info['trials_run']} new trials in {info['seconds']:.0f} s; the database covers "
               f"{info['tasks_covered']} of them")
    click.echo(f"wrote {out}/")


# what a MetaSchedule database folder holds (and tune-space's plan): a folder with none of them
# is someone else's (a model folder, a deploy folder, a home), never written into
TUNING_FILES = ("database_workload.json", "database_tuning_record.json", "tuning_plan.json")


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


@cli.command("latency-check")
@click.argument("table_file", metavar="TABLE.json", type=click.Path())
@click.option("--samples", type=ranged(SAMPLES), default=50, show_default=True,
              help="Sub-networks to measure end to end (a quarter near the middle of the table's range).")
@click.option("--rounds", type=ranged(ROUNDS), default=9, show_default=True, help="Interleaved timing rounds.")
@click.option("--seed", type=ranged(SEED), default=1, show_default=True,
              help="Which sub-networks are sampled.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the result (every sample) as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Scatter plot PNG [default: beside --json, or none].")
def latency_check(table_file, samples, rounds, seed, json_out, plot):
    """Check a latency table: sample sub-networks of its space, measure each end to end with the
    table's backend, options and threads, and compare with the table's prediction: MAPE,
    Spearman rank correlation, share within ±5% and ±10%."""
    from autonl.backends.latency import LatencyTable
    from autonl.backends.latency.measure import check_table, plot_check

    for path in (json_out, plot):
        if path:
            _out_file(path)
    table = LatencyTable.read(table_file)
    graph = table.space_graph()
    prov = table.provenance
    result = check_table(graph, table, get_backend(prov["backend"]), samples, prov.get("options") or {},
                         prov.get("rpc"), _effort(rounds), seed)
    click.echo(f"{table.describe()}, {result['samples']} sub-networks: MAPE {result['mape']:.1%}, Spearman "
               f"{result['spearman']:.3f} (MACs alone: {result['spearman_macs']:.3f}), within ±5%: "
               f"{result['within_5pct']:.0%}, within ±10%: {result['within_10pct']:.0%}, largest error "
               f"{result['max_abs_error']:.1%}, mean error {result['bias']:+.1%}")
    click.echo(f"machine speed during the check: the probe network ran {result['probe']['ms']:.3f} ms at best "
               f"(the table's {table.probe_ms:.3f} ms); its slowest round was {result['probe']['slowest_over_best']:.2f}x "
               f"its best", err=True)
    plot = plot or (str(Path(json_out).with_suffix(".png")) if json_out else None)
    if plot:
        plot_check(result, plot)
        click.echo(f"wrote {plot}")
    write_json(json_out, result)


@cli.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--backend", default="onnx", show_default=True, help="onnx (onnxruntime) or tvm.")
@click.option("--rpc", "rpc_addr", metavar="HOST:PORT", help="TVM: time on this RPC server (built for --target).")
@click.option("--threads", type=ranged(THREADS), help="Threads the runtime uses [default: this machine's CPUs].")
@click.option("--rounds", type=ranged(ROUNDS), default=20, show_default=True,
              help="Timing rounds (interleaved across the sources; the lowest round median is the latency).")
@click.option("--table", "table_file", type=click.Path(),
              help="Scale to this latency table's machine speed (its probe), to compare with its predictions.")
@click.option("--seed", type=ranged(SEED), default=0, show_default=True,
              help="Weight init for presets and graph files.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the result as JSON.")
@timing_backend_options
@with_preset_options
def bench(sources, backend, rpc_addr, threads, rounds, table_file, seed, json_out, resolution, width, batch, classes,
          **options):
    """End-to-end latency of models as deployed (each SOURCE a model or run folder, a preset or
    a graph file: compiled by the backend in memory; or an ONNX deploy folder, whose fp32 and
    int8 models are timed side by side, or a .onnx file), batch 1, timed as latency tables
    time their blocks (interleaved rounds with a probe network, see
    autonl.backends.latency.timing). Several sources are timed together, round by round:
    compare networks in one command."""
    from autonl.backends.latency import LatencyTable
    from autonl.backends.latency.measure import graph_timer, probe_facts, table_probe
    from autonl.backends.latency.timing import measure_all
    from autonl.passes import analyze_cost

    chosen = get_backend(backend)
    given = options_for(chosen, options, timing=True)
    if json_out:
        _out_file(json_out)
    ref = probe = None
    if table_file:
        table = LatencyTable.read(table_file)
        ref, probe = table.probe_ms, table_probe(table)
        if table.provenance["backend"] != chosen.name or table.provenance["threads"] != _threads(threads):
            raise AutonlError(f"{table_file} was measured with {table.describe()}; bench with the same backend and "
                              f"--threads {table.provenance['threads']}")
    models, timers, provenance, facts = {}, {}, {}, {}
    for source in sources:
        onnx_files = _onnx_models(source)
        if onnx_files is not None:      # a deploy folder of the ONNX backend, or a .onnx file
            if chosen.name != "onnx" or rpc_addr:
                raise AutonlError(f"{source}: an ONNX model is timed with onnxruntime here: --backend onnx, no --rpc")
            for key, (timer, fact) in _onnx_timers(source, onnx_files, _threads(threads)).items():
                timers[key], facts[key] = timer, fact
            continue
        model = load_deployable(source, resolution, width, batch, classes, seed)
        if model.graph.inputs[next(iter(model.graph.inputs))].shape[0] != 1:
            raise AutonlError(f"{source}: autonl bench times batch 1 (latency); build the model with --batch 1")
        models[source] = model
        cost = analyze_cost(model.graph)
        facts[source] = {"graph": model.graph.name, "macs": cost.macs,
                         "lightnl_blocks": sum(1 for n in model.graph if n.op == "lightnl")}
    for source, model in models.items():
        timers[source], provenance = chosen.latency_timer(model, _threads(threads), given, rpc_addr)
    if not provenance and chosen.name == "onnx":
        import onnxruntime
        provenance = {"backend": "onnx", "runtime": "onnxruntime", "runtime_version": onnxruntime.__version__,
                      "threads": _threads(threads), "clock": "wall time around InferenceSession.run",
                      "thread_pool": f"one shared intra-op pool of {_threads(threads)} thread(s), spinning"}
    if probe is not None:
        probe, _ = graph_timer(probe, chosen, _threads(threads), given, rpc_addr)
    run = measure_all(timers, _effort(rounds), probe, ref)
    if rpc_addr is None and run.busy_warning(_threads(threads)):
        click.echo(run.busy_warning(_threads(threads)), err=True)
    rows = []
    for key, fact in facts.items():
        t = run.timings[key]
        rows.append({"source": key, **fact, **t.as_dict()})
        macs = f", {fact['macs'] / 1e6:.1f}M MACs" if isinstance(fact.get("macs"), (int, float)) else ""
        click.echo(f"{key}: {t.ms:.3f} ms (p10 {t.p10_ms:.3f}, p90 {t.p90_ms:.3f}; raw best round {t.raw_ms:.3f} "
                   f"ms, {t.runs} runs){macs}")
    if probe is not None:
        click.echo(f"{provenance['runtime']} {provenance['runtime_version']}, {_threads(threads)} thread(s); scaled to "
                   f"{table_file}'s machine speed by its probe network ({run.probe_ms:.3f} ms at best here, "
                   f"{ref:.3f} ms there)", err=True)
    res = {**(rows[0] if len(rows) == 1 else {}), "models": rows, "provenance": provenance,
           "probe": probe_facts(run) if probe is not None else None,
           "scaled_to": f"the probe of {table_file}" if table_file else "not scaled (no --table)",
           "machine": {"cpus": run.cpus, "others_busy_cpus": None if rpc_addr else run.others_cpus}}
    write_json(json_out, res)


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
