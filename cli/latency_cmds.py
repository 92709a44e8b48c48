"""Latency commands: ``latency-table`` (per-block latency of a search space on a runtime),
``latency-check`` (the table's predictions against whole networks measured end to end) and
``bench`` (one model's latency as deployed, the same measurement)."""
from __future__ import annotations

from pathlib import Path

import click

from autonl.workflows.folders import check_out_file
from autonl.workflows.latency import (bench_sources, check_latency_table, check_table_request, check_tune_request,
                                      measure_latency_table, tune_space_db, write_check_plot)

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
    chosen = get_backend(backend)
    given = options_for(chosen, options, timing=True)
    check_table_request(out, chosen, rpc_addr)
    lock_output(out, "latency-table", inputs=(source, space))
    table = measure_latency_table(source, space, resolution, width, classes, chosen, threads, given, rpc_addr, rounds,
                                  calibration, out)
    click.echo(f"{table.description}: {table.nodes} searchable nodes, {table.entries} entries "
               f"({table.blocks_measured} distinct blocks timed), fixed part {table.fixed_ms:.3f} ms; "
               f"sub-networks from {table.low_ms:.3f} ms to {table.high_ms:.3f} ms")
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
    check_tune_request(target_name, out, tune_trials, tune_minutes, resume)
    lock_output(out, "tune-space", inputs=(source, space))
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    info = tune_space_db(source, space, resolution, width, classes, out, target_name, tune_trials, tune_minutes, resume,
                         log=log, layout=layout)
    click.echo(f"{info.tasks} distinct workloads ({info.tasks_with_records} already in the database); "
               f"{info.trials_run} new trials in {info.seconds:.0f} s; the database covers "
               f"{info.tasks_covered} of them")
    click.echo(f"wrote {out}/")


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
    for path in (json_out, plot):
        if path:
            check_out_file(path)
    check = check_latency_table(table_file, samples, rounds, seed)
    result = check.stats
    click.echo(f"{check.description}, {result['samples']} sub-networks: MAPE {result['mape']:.1%}, Spearman "
               f"{result['spearman']:.3f} (MACs alone: {result['spearman_macs']:.3f}), within ±5%: "
               f"{result['within_5pct']:.0%}, within ±10%: {result['within_10pct']:.0%}, largest error "
               f"{result['max_abs_error']:.1%}, mean error {result['bias']:+.1%}")
    click.echo(f"machine speed during the check: the probe network ran {result['probe']['ms']:.3f} ms at best "
               f"(the table's {check.table_probe_ms:.3f} ms); its slowest round was "
               f"{result['probe']['slowest_over_best']:.2f}x its best", err=True)
    plot = plot or (str(Path(json_out).with_suffix(".png")) if json_out else None)
    if plot:
        write_check_plot(check, plot)
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
    chosen = get_backend(backend)
    given = options_for(chosen, options, timing=True)
    if json_out:
        check_out_file(json_out)
    res = bench_sources(sources, chosen, given, rpc_addr, threads, rounds, table_file, seed,
                        (resolution, width, batch, classes))
    if res.busy_warning:
        click.echo(res.busy_warning, err=True)
    for row in res.rows:
        t = row.latency
        macs = f", {row.macs / 1e6:.1f}M MACs" if row.macs is not None else ""
        click.echo(f"{row.source}: {t.ms:.3f} ms (p10 {t.p10_ms:.3f}, p90 {t.p90_ms:.3f}; raw best round "
                   f"{t.raw_ms:.3f} ms, {t.runs} runs){macs}")
    if res.probe_ms is not None:
        click.echo(f"{res.provenance['runtime']} {res.provenance['runtime_version']}, {res.threads} thread(s); scaled "
                   f"to {table_file}'s machine speed by its probe network ({res.probe_ms:.3f} ms at best here, "
                   f"{res.ref_ms:.3f} ms there)", err=True)
    write_json(json_out, res.doc)
