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

import html
import json
import shutil
import time
from pathlib import Path

from autonl.ir import AutonlError
from autonl.ir.io import atomic_write

BUILTIN = {"builtin": "digits"}


def _stage(log, name: str):
    log(f"== {name}")
    return time.time()


def run_pipeline(data: str, target_macs: float, backend: str, out: str | Path, search_steps: int = 150,
                 train_steps: int = 150, resolution: int = 32, seed: int = 0, force: bool = False,
                 log=print) -> dict:
    from autonl.backends.deploy import check_out, load_model_or_graph, sha256, versions
    from autonl.backends.torch.data import num_classes
    from autonl.backends.torch.derive import derive_run
    from autonl.backends.torch.search import SearchConfig, search as run_search
    from autonl.backends.torch.train import TrainConfig, train as run_training

    from .main import load_target, relaxed_graph

    data = BUILTIN.get(data, data)
    out = Path(out)
    check_out(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise AutonlError(f"{out}: exists and is not empty; give another --out, or --force to replace it")
        shutil.rmtree(out)
    classes = num_classes(data)          # a missing or malformed dataset stops here, before any work
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = _stage(log, f"search: AutoNL space on {data} at {resolution}x{resolution}, toward "
                    f"{target_macs / 1e6:.0f}M MACs at 224x224, {search_steps} steps")
    graph = relaxed_graph("search-space", "autonl", resolution, None, classes)
    cfg = SearchConfig(target_macs=target_macs, data=data, steps=search_steps,
                       warmup_steps=max(1, search_steps // 5), batch_size=32, seed=seed, cost_resolution=224)
    search = run_search(graph, cfg, out / "search")
    timings["search"] = time.time() - t

    t = _stage(log, "derive")
    derived = derive_run(out / "search", out / "derived", None, False)
    timings["derive"] = time.time() - t

    t = _stage(log, f"fine-tune: {train_steps} steps")
    tcfg = TrainConfig(data=data, steps=train_steps, seed=seed, eval_every=train_steps)
    trained = run_training(load_target(str(out / "derived")), tcfg, out / "train", init=str(out / "derived"))
    timings["train"] = time.time() - t

    t = _stage(log, f"compile: {backend}")
    model = load_model_or_graph(out / "train")
    if backend == "onnx":
        from autonl.backends.onnx.compile import compile_onnx
        deploy = compile_onnx(model, out / "deploy", int8=True, calib_data=data, log=log)
    else:
        from autonl.backends.tvm import get_target
        from autonl.backends.tvm.compile import compile_tvm
        deploy = compile_tvm(model, out / "deploy", get_target("host"), log=log)
    timings["compile"] = time.time() - t

    latency = measure_latency(model, out / "deploy", backend)
    summary = {
        "data": data, "target_macs": target_macs, "backend": backend, "seed": seed,
        "search": search, "derived": {k: derived[k] for k in ("derived", "mobilenetv2", "autonl-s", "autonl-l")},
        "resolution": derived["resolution"], "train": trained, "deploy_checks": deploy.get("checks"),
        "int8": deploy.get("int8"), "latency": latency, "seconds": timings,
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    write_report(out, summary)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p != out / "manifest.json")
    manifest = {
        "format": "autonl-run", "version": 1,
        "inputs": {"data": data, "target_macs": target_macs, "backend": backend, "search_steps": search_steps,
                   "train_steps": train_steps, "resolution": resolution},
        "seeds": {"search": seed, "train": seed, "calibration": 0},
        "versions": versions("torch", "onnx", "onnxruntime", "apache-tvm", "numpy"),
        "seconds": timings,
        "files": {f: {"bytes": (out / f).stat().st_size, "sha256": sha256(out / f)} for f in files},
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return summary


def measure_latency(model, deploy: Path, backend: str, runs: int = 30) -> dict:
    """Batch-1 latency of PyTorch eager and of the deployed model, alternating, in one run."""
    import statistics

    import torch

    from autonl.backends.deploy import reference_input
    x = reference_input(model.graph, batch=1)
    xt = torch.from_numpy(x)

    def eager(_):
        with torch.inference_mode():
            model.module(xt)

    runners = {"torch eager": eager}
    if backend == "onnx":
        from autonl.backends.onnx.runtime import run, session
        sess = session(str(deploy / "model.onnx"))
        runners["onnxruntime fp32"] = lambda v: run(sess, v)
        sess8 = session(str(deploy / "model.int8.onnx"))
        runners["onnxruntime int8"] = lambda v: run(sess8, v)
    else:
        import tvm

        from autonl.backends.tvm.compile import vm_runner
        params = tvm.runtime.load_param_dict((deploy / "model.params").read_bytes())
        runners["TVM (untuned)"] = vm_runner(tvm.runtime.load_module(str(deploy / "model.so")),
                                             [params[k] for k in sorted(params)])
        from autonl.backends.deploy import deploy_graph
        from autonl.backends.onnx.export import export_onnx
        from autonl.backends.onnx.runtime import run, session
        sess = session(export_onnx(deploy_graph(model)))   # the alternative a user would pick
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


def _table(rows: list[list], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: Path, s: dict) -> None:
    """report.md and report.html: the same content; images are the run's own PNGs."""
    arch = []
    for name, c in s["derived"].items():
        nl = ", ".join(f"{d['after']} (r={d['r']}, s={d['s']})" for d in c.get("lightnl", [])) or "-"
        arch.append([name, f"{c['macs'] / 1e6:.1f}M", f"{c['params'] / 1e6:.2f}M", c.get("blocks", "-"),
                     len(c.get("lightnl", [])), nl])
    arch_head = ["network", "MACs", "params", "blocks", "LightNL", "LightNL after (ratio, stride)"]
    train = s["train"]
    acc_rows = [["supernet at the end of the search", f"{s['search'].get('supernet_val_acc', float('nan')):.3f}"],
                ["derived network after fine-tuning (fp32)", f"{train['val_acc']:.3f}"]]
    if s.get("int8") and s["int8"].get("accuracy"):
        acc_rows.append(["deployed int8 (onnxruntime)", f"{s['int8']['accuracy']['int8']:.3f}"])
    lat = s["latency"]
    base = lat["torch eager"]
    lat_rows = [[k, f"{v:.2f}", f"{v / base:.2f}x"] for k, v in lat.items()]
    checks = s.get("deploy_checks") or {}
    parity = checks.get("parity", {}).get("max_abs_diff", checks.get("vs_torch_max_abs_diff"))
    srch = s["search"]
    images = [("MACs of the sampled network against search step", "search/macs.png"),
              ("Decisions per block (LightNL on/off, ratio, stride)", "search/decisions.png"),
              ("Fine-tuning: loss and accuracy", "train/curves.png")]
    images = [(t, p) for t, p in images if (out / p).is_file()]
    md = [f"# AutoNL run: {s['data']}, {s['target_macs'] / 1e6:.0f}M MACs, {s['backend']}", "",
          f"Search on `{s['data']}` toward {s['target_macs'] / 1e6:.0f}M MACs (counted at 224x224): the derived "
          f"network has {srch['derived_macs'] / 1e6:.1f}M MACs at 224x224 "
          f"({srch['off_target']:+.1%} off target), {srch['lightnl_blocks']} LightNL blocks in "
          f"{srch['blocks']} MBConvs. Costs below at {s['resolution']}x{s['resolution']}.", ""]
    for title, path in images:
        md += [f"## {title}", "", f"![{title}]({path})", ""]
    md += ["## Derived architecture next to the published ones", "", _table(arch, arch_head), "",
           "## Accuracy (validation split)", "", _table(acc_rows, ["model", "accuracy"]), "",
           "## Latency (batch 1, this machine, median, runtimes alternating)", "",
           _table(lat_rows, ["runtime", "ms", "vs torch eager"]), "",
           f"Deployed model against torch on the same weights: max |diff| {parity:.2e}." if parity is not None
           else "", "",
           "## Time per stage", "", _table([[k, f"{v:.0f} s"] for k, v in s["seconds"].items()], ["stage", "time"]),
           "", "Files: `search/`, `derived/`, `train/`, `deploy/`, `summary.json`, `manifest.json` (sha256 of "
           "every file).", ""]
    atomic_write(out / "report.md", "\n".join(md))

    def h_table(rows, head):
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{th}</tr>{trs}</table>"

    body = [f"<h1>{html.escape(md[0][2:])}</h1>", f"<p>{html.escape(md[2])}</p>"]
    for title, path in images:
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(path)}" alt="{html.escape(title)}">']
    body += ["<h2>Derived architecture next to the published ones</h2>", h_table(arch, arch_head),
             "<h2>Accuracy (validation split)</h2>", h_table(acc_rows, ["model", "accuracy"]),
             "<h2>Latency (batch 1, this machine, median)</h2>",
             h_table(lat_rows, ["runtime", "ms", "vs torch eager"])]
    if parity is not None:
        body.append(f"<p>Deployed model against torch on the same weights: max |diff| {parity:.2e}.</p>")
    body += ["<h2>Time per stage</h2>", h_table([[k, f"{v:.0f} s"] for k, v in s["seconds"].items()],
                                                ["stage", "time"])]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>AutoNL run</title><style>"
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto}img{max-width:100%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write(out / "report.html", page)
