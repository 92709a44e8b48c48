"""Inference latency of the deployment runtimes against PyTorch eager, measured in one run.

For each network (MobileNetV2, AutoNL-S, AutoNL-L at 224x224; random weights, since speed
does not depend on their values) and each batch size, every runtime is timed in rounds that
alternate between runtimes, so that a load change on this shared machine hits all of them
alike; the figure is the median over all timed calls. Ratios are against PyTorch eager
(the alternative a user would pick) and against onnxruntime fp32.

Runtimes: ``torch`` (eager, fp32, inference mode), ``ort-fp32`` (model.onnx as `autonl
compile` writes it: BN folded), ``ort-int8`` (static int8 QDQ, calibrated on random inputs),
``tvm-untuned`` (the Relax build `autonl compile --backend tvm --target host` makes without
tuning, run through the Relax VM; built per batch size, since TVM builds static shapes), and
with ``--tvm-tune-trials N`` and/or ``--tvm-tune-minutes M`` ``tvm-tuned``: MetaSchedule with
that budget spread by the tasks' share of the time, weight prepacking, as `autonl compile
--tune-trials N --tune-minutes M` does. Its database lives in
``--tuning-dir``/<net>-b<batch>-r<resolution>-<layout> and is reused: with ``--tvm-tuned`` (no budget)
the database there is applied with no new trials (a database from `autonl compile` or
`autonl tune-space` can be copied or linked there).

``--layers N`` prints, for every tuned build, the N layers where TVM spends the most: the
tuned kernel's time (times its calls) against the same layer in onnxruntime's profile (the
layer: an op kind with the same weight and output sizes; onnxruntime's NCHWc layouts
reorder shapes but keep sizes), and the untuned kernel's time.

Every runtime runs with ``--threads`` threads: torch's intra-op threads, onnxruntime's
intra-op threads, ``TVM_NUM_THREADS`` (also for the tuning's measurements).

    python benchmarks/runtime_latency.py [--nets mobilenetv2,autonl-s,autonl-l] [--batches 1,8]
                                         [--rounds 5] [--calls 10] [--threads N] [--json OUT]
                                         [--tvm-tune-trials N] [--tvm-tune-minutes M] [--tvm-tuned]
                                         [--tuning-dir runs/bench-tuning] [--layers 15]
"""
from __future__ import annotations

import json
import os
import statistics

import harness
import numpy as np
import torch

from autonl.backends.latency.timing import median_of_calls
from autonl.backends.loading import deploy_model, load_model_or_graph, reference_input
from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import quantize_int8, run, session
from autonl.ir import build_preset


def tvm_runner(fp32, shape):
    import tvm

    from autonl.backends.tvm import get_target
    from autonl.backends.tvm.compile import build, to_relax, vm_runner
    mod, params = to_relax(fp32, shape)
    ex, main_params = build(mod, tvm.target.Target(get_target("host").target_dict()), params, False, None)
    return vm_runner(ex, main_params)


def tvm_tuned_runner(fp32, shape, trials: int, minutes: float | None, work_dir: str, layers: int, threads: int,
                     layout: str = "nhwc"):
    import tvm

    from autonl.backends.tvm import get_target
    from autonl.backends.tvm.compile import build, layer_report, pre_tuning, to_relax, tune, vm_runner
    target = tvm.target.Target(get_target("host").target_dict())
    mod, params = to_relax(fp32, shape, layout)
    info = tune(pre_tuning(mod, target, True), target, work_dir, trials, minutes=minutes)
    print(f"  tuning {work_dir}: {info['tasks']} tasks, {info['tasks_with_records']} already had records, "
          f"{info['trials_run']} new trials in {info['seconds']:.0f} s; the database covers {info['tasks_covered']}",
          flush=True)
    ex, main_params = build(mod, target, params, True, work_dir)
    if layers:
        print_layer_gap(layer_report(pre_tuning(mod, target, True), target, work_dir), fp32, shape, threads, layers)
    return vm_runner(ex, main_params)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _task_key(row: dict):
    """(kind, weight size, output size) of a TVM task, from its PrimFunc's buffers."""
    kind = "conv" if "conv2d" in row["layer"] else "matmul" if "matmul" in row["layer"] else None
    return (kind, row["weight_numel"], row["out_numel"]) if kind else None


def ort_profile(fp32, shape, threads: int, runs: int = 20) -> dict:
    """Median microseconds per run of each onnxruntime kernel, keyed like :func:`_task_key`."""
    import glob
    import tempfile

    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(fp32.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        sess.end_profiling()
        events = json.load(open(glob.glob(os.path.join(tmp, "ort*.json"))[0]))
    per: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        a = e.get("args", {})
        op = a.get("op_name", "")
        kind = "conv" if "Conv" in op else "matmul" if "MatMul" in op or op == "Gemm" else None
        if kind is None:
            continue
        ins = [list(d.values())[0] for d in a.get("input_type_shape", [])]
        outs = [list(d.values())[0] for d in a.get("output_type_shape", [])]
        wnum = _numel(ins[1]) if kind == "conv" and len(ins) > 1 else 0
        if kind == "matmul" and op == "Gemm":
            wnum = _numel(ins[1])
        key = (kind, wnum, _numel(outs[0]) if outs else 0)
        per.setdefault(key, {}).setdefault(e["name"], []).append(e["dur"])
    # a key's time per run: each of its nodes' median, summed over the nodes
    return {k: sum(statistics.median(v) for v in nodes.values()) for k, nodes in per.items()}


def print_layer_gap(rows: list[dict], fp32, shape, threads: int, top: int) -> None:
    ort_us = ort_profile(fp32, shape, threads)
    tvm_by_key: dict = {}
    for r in rows:
        k = _task_key(r)
        if k is not None and r["tuned_us"]:
            tvm_by_key.setdefault(k, []).append(r)
    total = sum((r["tuned_us"] or r["untuned_us"]) * r["calls"] for r in rows)
    print(f"  per layer (TVM tuned kernels sum to {total / 1e3:.2f} ms; onnxruntime's profiled kernels to "
          f"{sum(ort_us.values()) / 1e3:.2f} ms):")
    print(f"  {'layer (TVM task)':<44} {'calls':>5} {'untuned us':>11} {'TVM us':>9} {'ORT us':>9} {'TVM/ORT':>8}")
    ranked = sorted(rows, key=lambda r: -(r["tuned_us"] or r["untuned_us"]) * r["calls"])
    for r in ranked[:top]:
        k = _task_key(r)
        t = (r["tuned_us"] or r["untuned_us"]) * r["calls"]
        o = None
        if k in ort_us and k in tvm_by_key:
            share = r["calls"] / sum(x["calls"] for x in tvm_by_key[k])   # same-size layers split the time
            o = ort_us[k] * share
        print(f"  {r['layer'][:44]:<44} {r['calls']:>5} {r['untuned_us'] * r['calls']:>11.0f} {t:>9.0f} "
              f"{o if o is not None else float('nan'):>9.0f} {t / o if o else float('nan'):>8.2f}")


def runners_for(name: str, resolution: int, threads: int, batch: int, tune_trials: int = 0,
                tuning_dir: str = "runs/bench-tuning", tune_minutes: float | None = None, tuned: bool = False,
                layers: int = 0, layout: str = "nhwc") -> dict:
    model = load_model_or_graph(build_preset(name, resolution=resolution))
    fp32 = export_onnx(deploy_model(model))
    calib = [reference_input(model.graph, batch=8, seed=s) for s in range(4)]
    int8, _ = quantize_int8(fp32, calib)
    s32, s8 = session(fp32, threads), session(int8, threads)

    def eager(x):
        with torch.inference_mode():
            return model.module(torch.from_numpy(x))

    shape = [batch, 3, resolution, resolution]
    runners = {"torch": eager, "ort-fp32": lambda x: run(s32, x), "ort-int8": lambda x: run(s8, x),
               "tvm-untuned": tvm_runner(fp32, shape)}
    if tune_trials > 0 or tune_minutes or tuned:
        runners["tvm-tuned"] = tvm_tuned_runner(fp32, shape, tune_trials, tune_minutes,
                                                os.path.join(tuning_dir, f"{name}-b{batch}-r{resolution}-{layout}"),
                                                layers, threads, layout)
    return runners


def measure(runners: dict, x: np.ndarray, rounds: int, calls: int) -> dict:
    """Median milliseconds of every runner over all its calls, in interleaved rounds (the one timer)."""
    return median_of_calls({k: (lambda fn=fn: fn(x)) for k, fn in runners.items()}, rounds, calls, warmup=3)


def main() -> None:
    ap = harness.parser(__doc__, threads=0)
    ap.add_argument("--nets", default="mobilenetv2,autonl-s,autonl-l")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--tvm-tune-trials", type=int, default=0, help="add tvm-tuned: MetaSchedule trials per task "
                    "(on average)")
    ap.add_argument("--tvm-tune-minutes", type=float, help="add tvm-tuned: a tuning budget in minutes per network")
    ap.add_argument("--tvm-tuned", action="store_true", help="add tvm-tuned from the database there, no new trials")
    ap.add_argument("--layers", type=int, default=15, help="per-layer table rows for tuned builds (0: none)")
    ap.add_argument("--tuning-dir", default="runs/bench-tuning", help="where the tuning databases live")
    ap.add_argument("--tvm-layout", choices=["nhwc", "nchw"], default="nhwc", help="tvm-tuned's layout (--layout)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from autonl.backends.tvm.threads import set_tvm_threads
    set_tvm_threads(args.threads)       # TVM's own default is half the CPUs on x86-64; tuning inherits it
    results = []
    print(f"{args.resolution}x{args.resolution}, {args.threads} threads, median of {args.rounds} rounds x "
          f"{args.calls} calls, runtimes alternating; ratio = runtime time / reference time")
    for name in args.nets.split(","):
        for batch in map(int, args.batches.split(",")):
            runners = runners_for(name, args.resolution, args.threads, batch, args.tvm_tune_trials, args.tuning_dir,
                                  args.tvm_tune_minutes, args.tvm_tuned, args.layers, args.tvm_layout)
            x = reference_input(build_preset(name, resolution=args.resolution), batch=batch)
            t = measure(runners, x, args.rounds, args.calls)
            results.append({"net": name, "batch": batch, "ms": t})
            cols = "  ".join(f"{k} {v:7.2f} ms" for k, v in t.items())
            ratios = "  ".join(f"{k}/torch {v / t['torch']:.2f}x" for k, v in t.items() if k != "torch")
            vs_ort = "  ".join(f"{k}/ort-fp32 {v / t['ort-fp32']:.2f}x" for k, v in t.items()
                               if k not in ("torch", "ort-fp32"))
            print(f"{name:<12} batch {batch}:  {cols}\n{'':<21}{ratios}  {vs_ort}", flush=True)
    if args.json:
        harness.write_json(args.json, {"resolution": args.resolution, "threads": args.threads,
                                       "tvm_tune_trials": args.tvm_tune_trials, "results": results})


if __name__ == "__main__":
    main()
