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
import shutil
import time
from pathlib import Path

from autonl.ir import AutonlError, atomic_write
from autonl.passes import analyze_cost, resize_graph
from autonl.passes.sources import load_target, relaxed_graph

from .base import Backend
from .catalog import get_backend
from .loading import load_model_or_graph
from .locks import output_lock
from .manifest import check_out, versions, write_manifest
from .report import write_report

BUILTIN = {"builtin": "digits"}


def _stage(log, name: str):
    log(f"== {name}")
    return time.time()


def run_pipeline(data: str, target_macs: float, backend: str | Backend, out: str | Path, search_steps: int = 150,
                 train_steps: int = 150, resolution: int = 32, seed: int = 0, force: bool = False,
                 log=print) -> dict:
    """Every stage under ``out``, under the lock of ``out`` (:mod:`.locks`); each stage locks
    its own folder inside it as well."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    data = BUILTIN.get(data, data)
    out = Path(out)
    check_out(out)
    with output_lock(out, "run"):
        return _run_pipeline(data, target_macs, backend, out, search_steps, train_steps, resolution, seed, force, log)


def _run_pipeline(data: str, target_macs: float, backend: Backend, out: Path, search_steps: int, train_steps: int,
                  resolution: int, seed: int, force: bool, log) -> dict:
    from .torch.child import extract_child
    from .torch.data import num_classes
    from .torch.search import SearchConfig, check_target_bounds, search as run_search
    from .torch.train import TrainConfig, train as run_training

    if out.exists() and any(out.iterdir()):
        if not force:
            raise AutonlError(f"{out}: exists and is not empty; give another --out, or --force to replace it")
        shutil.rmtree(out)
    classes = num_classes(data)          # a missing or malformed dataset stops here, before any work
    graph = relaxed_graph("search-space", "autonl", resolution, None, classes)
    at_224 = analyze_cost(resize_graph(graph, 224))   # a target out of reach too: nothing is written
    check_target_bounds(at_224.macs, at_224.total("macs_max"), target_macs)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = _stage(log, f"search: AutoNL space on {data} at {resolution}x{resolution}, toward "
                    f"{target_macs / 1e6:.0f}M MACs at 224x224, {search_steps} steps")
    cfg = SearchConfig(target_macs=target_macs, data=data, steps=search_steps,
                       warmup_steps=max(1, search_steps // 5), batch_size=32, seed=seed, cost_resolution=224)
    search = run_search(graph, cfg, out / "search")
    timings["search"] = time.time() - t

    t = _stage(log, "derive")
    derived = extract_child(out / "search", out / "derived", None, False)
    timings["derive"] = time.time() - t

    t = _stage(log, f"fine-tune: {train_steps} steps")
    tcfg = TrainConfig(data=data, steps=train_steps, seed=seed, eval_every=train_steps)
    trained = run_training(load_target(str(out / "derived")), tcfg, out / "train", init=str(out / "derived"))
    timings["train"] = time.time() - t

    t = _stage(log, f"compile: {backend.name}")
    model = load_model_or_graph(out / "train")
    deploy = backend.compile(model, out / "deploy", backend.run_options(data), log)
    timings["compile"] = time.time() - t

    latency = measure_latency(model, out / "deploy", backend)
    summary = {
        "data": data, "target_macs": target_macs, "backend": backend.name, "seed": seed,
        "search": search, "derived": {k: derived[k] for k in ("derived", "mobilenetv2", "autonl-s", "autonl-l")},
        "resolution": derived["resolution"], "classes": derived["classes"], "input_resolution": resolution,
        "train": trained, "deploy_checks": deploy.get("checks"),
        "int8": deploy.get("int8"), "latency": latency, "seconds": timings,
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    write_report(out, summary)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p != out / "manifest.json")
    manifest = {
        "format": "autonl-run", "version": 1,
        "inputs": {"data": data, "target_macs": target_macs, "backend": backend.name, "search_steps": search_steps,
                   "train_steps": train_steps, "resolution": resolution},
        "seeds": {"search": seed, "train": seed, "calibration": 0},
        "versions": versions("torch", "onnx", "onnxruntime", "apache-tvm", "numpy"),
        "seconds": timings,
    }
    write_manifest(out, manifest, files)
    return summary


def measure_latency(model, deploy: Path, backend: Backend, runs: int = 30) -> dict:
    """Batch-1 latency of PyTorch eager and of the deployed model, alternating, in one run."""
    import statistics

    import torch

    from .loading import reference_input
    x = reference_input(model.graph, batch=1)
    xt = torch.from_numpy(x)

    def eager(_):
        with torch.inference_mode():
            model.module(xt)

    runners = {"torch eager": eager, **backend.load(deploy)}
    if "onnxruntime fp32" not in runners:   # the alternative a user would pick, beside any other backend
        from .loading import deploy_model
        from .onnx.export import export_onnx
        from .onnx.runtime import run, session
        sess = session(export_onnx(deploy_model(model)))
        runners["onnxruntime fp32"] = lambda v: run(sess, v)
    times: dict[str, list] = {k: [] for k in runners}
    for fn in runners.values():
        fn(x)
    for _ in range(runs):
        for k, fn in runners.items():
            t0 = time.perf_counter()
            fn(x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
