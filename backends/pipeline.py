"""``autonl run``: data to deployable model in one command.

Stages, each in its own folder under the run directory: ``search/`` (the AutoNL space on
the data toward ``target_macs`` counted at 224x224), ``derived/`` (discrete graph, inherited
weights, comparison with MobileNetV2 and AutoNL-S/L), ``train/`` (a short fine-tune),
``deploy/`` (``autonl compile`` with the chosen backend, whose parity check stops the run on
a mismatch). Then ``report.md`` and ``report.html`` (plots, architecture, costs, accuracy,
latencies) and ``manifest.json`` (inputs, seeds, versions, every file with its sha256),
written last. Every file is written under a temporary name and renamed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from autonl.ir import AutonlError, atomic_write
from autonl.passes import analyze_cost, resize_graph
from autonl.passes.sources import load_target, relaxed_graph

from .base import Backend
from .catalog import get_backend
from .checks import compile_with_checks
from .loading import load_model_or_graph
from .locks import output_lock
from .manifest import check_out, versions, write_manifest
from .outputs import replacing_folder
from .report import write_report

BUILTIN = {"builtin": "digits"}


def _stage(log, name: str):
    log(f"== {name}")
    return time.time()


def run_pipeline(data: str, target_macs: float | None, backend: str | Backend, out: str | Path,
                 search_steps: int | None = None, train_steps: int | None = None, resolution: int | None = None,
                 seed: int = 0, force: bool = False, log=print, batch_size: int | None = None,
                 lightnl_norm: str | None = None, target_latency_ms: float | None = None,
                 latency_table: str | None = None, aug: dict | None = None) -> dict:
    """Every stage under ``out``, under the lock of ``out`` (:mod:`.locks`); each stage locks
    its own folder inside it as well. Settings left ``None`` are fitted to the data
    (:func:`~autonl.backends.torch.data.fitted_settings`) and printed with the reason.
    ``target_latency_ms`` with ``latency_table`` (instead of ``target_macs``): search toward a
    latency the table predicts; the report then has the derived network's predicted and
    measured latency (at the table's resolution, backend and threads). ``aug``: the
    augmentation options ``crop_scale``, ``flip``, ``eval_crop`` of search and fine-tuning
    (:func:`~autonl.backends.torch.data.augmentation`; left out: the data's defaults)."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    data = BUILTIN.get(data, data)
    out = Path(out)
    check_out(out)
    asked = {"resolution": resolution, "batch_size": batch_size, "search_steps": search_steps,
             "train_steps": train_steps}
    with output_lock(out, "run"):
        # the inputs first: a missing dataset or table stops here, before the old folder is touched
        from .torch.data import num_classes
        classes = num_classes(data)
        table = None
        if latency_table is not None:
            from .latency import LatencyTable
            table = LatencyTable.read(latency_table)
        # old files set aside beside --out and put back on any failure or signal (.outputs)
        with replacing_folder(out, force, inputs=(data, latency_table)):
            return _run_pipeline(data, classes, target_macs, backend, out, asked, seed, log, lightnl_norm,
                                 target_latency_ms, latency_table, table, aug or {})


def _settings(data: str, asked: dict) -> tuple[dict, str | None]:
    """The run's settings: those asked for, the rest fitted to the data. The built-in sets
    (digits, fashion-mnist, longrange) keep what the digits were tuned with (search batch 32,
    fine-tuning batch 64, the default learning rates); on a folder both stages use the fitted
    batch, with the learning rates scaled to it (linear scaling rule)."""
    import torch

    from .torch.data import BUILTIN_DATASETS, fitted_settings, scaled_lr
    from .torch.search import SearchConfig
    from .torch.train import TrainConfig
    fitted = fitted_settings(data, gpu=torch.cuda.is_available())
    chosen = {k: v if v is not None else fitted[k] for k, v in asked.items()}
    builtin = data in BUILTIN_DATASETS
    batch = chosen["batch_size"]
    chosen["train_batch_size"] = TrainConfig.batch_size if builtin and asked["batch_size"] is None else batch
    chosen["search_lr"] = SearchConfig.lr if builtin else scaled_lr(SearchConfig.lr, batch)
    chosen["train_lr"] = TrainConfig.lr if builtin else scaled_lr(TrainConfig.lr, chosen["train_batch_size"])
    line = None
    if any(v is None for v in asked.values()):
        given = [k for k, v in asked.items() if v is not None]
        line = (f"settings: resolution {chosen['resolution']}, batch {batch}, search {chosen['search_steps']} steps "
                f"(lr {chosen['search_lr']:g}), fine-tune {chosen['train_steps']} steps (lr {chosen['train_lr']:g}); "
                f"fitted to the data: {fitted['why']}" + (f" (given: {', '.join(given)})" if given else ""))
    return chosen, line


def _run_pipeline(data: str, classes: int, target_macs: float | None, backend: Backend, out: Path, asked: dict,
                  seed: int, log, lightnl_norm: str | None, target_latency_ms: float | None = None,
                  latency_table: str | None = None, table=None, aug: dict | None = None) -> dict:
    """The stages, in ``out`` (emptied by the caller); ``classes`` and ``table`` (the read
    ``latency_table``) as the caller checked them."""
    from .torch.child import extract_child
    from .torch.data import accuracy_line, chance_level
    from .torch.search import SearchConfig, check_target_bounds, search as run_search
    from .torch.train import TrainConfig, train as run_training

    settings, settings_line = _settings(data, asked)
    resolution, search_steps, train_steps = settings["resolution"], settings["search_steps"], settings["train_steps"]
    graph = relaxed_graph("search-space", "autonl", resolution, None, classes, lightnl_norm)
    if target_latency_ms is not None:       # a table that does not fit, a target out of reach: nothing written
        at_table = resize_graph(graph, table.resolution)
        table.check_fits(at_table)
        check_target_bounds(*table.bounds(at_table), target_latency_ms, "ms")
        goal = f"{target_latency_ms:.3f} ms predicted by {latency_table} ({table.describe()})"
    else:
        table = None                        # a MAC target: the table, if any, plays no part
        at_224 = analyze_cost(resize_graph(graph, 224))   # a target out of reach too: nothing is written
        check_target_bounds(at_224.macs, at_224.total("macs_max"), target_macs)
        goal = f"{target_macs / 1e6:.0f}M MACs at 224x224"
    if settings_line:
        log(settings_line)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = _stage(log, f"search: AutoNL space on {data} at {resolution}x{resolution}, toward {goal}, {search_steps} steps")
    cfg = SearchConfig(target_macs=target_macs, target_latency_ms=target_latency_ms,
                       latency_table=str(Path(latency_table).resolve()) if table else None, data=data,
                       steps=search_steps, warmup_steps=max(1, search_steps // 5), batch_size=settings["batch_size"],
                       lr=settings["search_lr"], seed=seed, cost_resolution=None if table else 224, **(aug or {}))
    search = run_search(graph, cfg, out / "search")
    timings["search"] = time.time() - t
    if search.get("landing_warning"):
        log(search["landing_warning"])

    t = _stage(log, "derive")
    derived = extract_child(out / "search", out / "derived", None, False)
    timings["derive"] = time.time() - t

    t = _stage(log, f"fine-tune: {train_steps} steps")
    tcfg = TrainConfig(data=data, steps=train_steps, seed=seed, eval_every=train_steps,
                       batch_size=settings["train_batch_size"], lr=settings["train_lr"], **(aug or {}))
    trained = run_training(load_target(str(out / "derived")), tcfg, out / "train", init=str(out / "derived"))
    timings["train"] = time.time() - t
    acc_line, acc_warning = accuracy_line(trained["val_acc"], data)
    log(f"fine-tuned: {acc_line}")
    if acc_warning:
        log(acc_warning)
    if trained.get("val_nonfinite"):
        log(f"warning: {trained['val_nonfinite']} of {trained['val_n']} validation images give non-finite logits")

    t = _stage(log, f"compile: {backend.name}")
    model = load_model_or_graph(out / "train")
    deploy = compile_with_checks(backend, model, out / "deploy", backend.run_options(data), log, data=data)
    timings["compile"] = time.time() - t

    latency, latency_facts = measure_latency(model, out / "deploy", backend)
    if latency_facts["warning"]:
        log(latency_facts["warning"])
    latency_target = None
    if table is not None:
        latency_target = measure_against_table(model.graph, table, target_latency_ms, search["predicted_latency_ms"])
        log(f"latency at {table.resolution}x{table.resolution} ({table.describe()}): target {target_latency_ms:.3f} ms, "
            f"predicted {latency_target['predicted_ms']:.3f} ms, measured {latency_target['measured_ms']:.3f} ms "
            f"({latency_target['error']:+.1%})")
    summary = {
        "data": data, "target_macs": target_macs, "target_latency_ms": target_latency_ms,
        "latency_target": latency_target, "backend": backend.name, "seed": seed,
        "search": search, "derived": {k: derived[k] for k in ("derived", "mobilenetv2", "autonl-s", "autonl-l")},
        "resolution": derived["resolution"], "classes": derived["classes"], "input_resolution": resolution,
        "train": trained, "deploy_checks": deploy.get("checks"), "settings": settings,
        "chance": chance_level(data)[0], "accuracy_warning": acc_warning, "data_facts": model.data,
        "int8": deploy.get("int8"), "latency": latency, "latency_timing": latency_facts, "seconds": timings,
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    write_report(out, summary)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p != out / "manifest.json")
    manifest = {
        "format": "autonl-run", "version": 1,
        "inputs": {"data": data, "target_macs": target_macs, "target_latency_ms": target_latency_ms,
                   "latency_table": latency_table, "backend": backend.name, **settings,
                   "lightnl_norm": lightnl_norm or "space default"},
        "seeds": {"search": seed, "train": seed, "calibration": 0},
        "versions": versions("torch", "onnx", "onnxruntime", "apache-tvm", "numpy"),
        "seconds": timings,
    }
    write_manifest(out, manifest, files)
    return summary


def measure_against_table(graph, table, target_ms: float, predicted_ms: float) -> dict:
    """The derived network at the table's resolution, timed with the table's backend, options
    and threads and scaled to its machine speed (:mod:`.latency.timing`): the latency the
    search aimed at, measured."""
    from .latency import Effort
    from .latency.measure import table_probe, time_graphs
    prov = table.provenance
    at = resize_graph(graph, table.resolution)
    timings, _, _ = time_graphs({"derived": at}, get_backend(prov["backend"]), prov["threads"],
                                prov.get("options") or {}, prov.get("rpc"), Effort(rounds=20), "latency", progress=False,
                                probe=table_probe(table), probe_ref_ms=table.probe_ms)
    t = timings["derived"]
    return {"target_ms": target_ms, "predicted_ms": predicted_ms, "measured_ms": t.ms, "p10_ms": t.p10_ms,
            "p90_ms": t.p90_ms, "error": t.ms / target_ms - 1, "resolution": table.resolution,
            "table": table.path, "of": table.describe()}


def measure_latency(model, deploy: Path, backend: Backend, rounds: int = 7) -> tuple[dict, dict]:
    """Batch-1 latency of PyTorch eager and of each deployed model (``{runtime: ms}``) and the
    run's facts (threads, the load of other processes, a warning line or None).

    Timed as ``autonl bench`` times (:func:`~.latency.timing.measure_all`): each runtime in a
    block of calls per round, the runtimes in turn, and its lowest round median, so that
    neither runtime's threads (torch's spinning OpenMP pool, onnxruntime's) are timed while
    the other's still hold the cores. Alternating single calls measured both several times
    slower than alone (a 32 px network: eager 51 ms against 8 ms alone)."""
    import torch

    from .cpu import usable_cpus
    from .latency.timing import Effort, measure_all, wall_timer
    from .loading import reference_input
    x = reference_input(model.graph, batch=1)
    xt = torch.from_numpy(x)

    def eager():
        with torch.inference_mode():
            model.module(xt)

    calls = {"torch eager": eager}
    for label, fn in backend.load(deploy).items():      # the folder checked against its manifest
        calls[label] = lambda f=fn: f(x)
    from .onnx.runtime import run, session
    for label, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
        if label in calls and (deploy / file).is_file():     # as deployed: onnxruntime's spinning pool
            sess = session(deploy / file, spin=True)
            calls[label] = lambda s=sess: run(s, x)
    if "onnxruntime fp32" not in calls:   # the alternative a user would pick, beside any other backend
        from .loading import deploy_model
        from .onnx.export import export_onnx
        sess = session(export_onnx(deploy_model(model)), spin=True)
        calls["onnxruntime fp32"] = lambda: run(sess, x)
    measured = measure_all({k: wall_timer(fn) for k, fn in calls.items()},
                           Effort(warmup=3, rounds=rounds, round_seconds=0.1, max_round_runs=50, extra=1))
    threads = torch.get_num_threads()
    facts = {"torch_threads": threads, "cpus": usable_cpus(), "others_busy_cpus": measured.others_cpus,
             "rule": "each runtime timed in blocks of calls, in turn, over rounds; its lowest round median",
             "warning": measured.busy_warning(threads)}
    return {k: t.ms for k, t in measured.timings.items()}, facts
