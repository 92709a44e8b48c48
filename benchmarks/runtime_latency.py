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
with ``--tvm-tune-trials N`` ``tvm-tuned``: MetaSchedule, N trials per task, weight
prepacking, as `autonl compile --tune-trials N` does. Its database lives in
``--tuning-dir``/<net>-b<batch>-r<resolution> and is reused: run again with the same N and no
new trials are made (a larger N tunes only the tasks without a record).

    python benchmarks/runtime_latency.py [--nets mobilenetv2,autonl-s,autonl-l] [--batches 1,8]
                                         [--rounds 5] [--calls 10] [--threads N] [--json OUT]
                                         [--tvm-tune-trials N] [--tuning-dir runs/bench-tuning]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

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


def tvm_tuned_runner(fp32, shape, trials: int, work_dir: str):
    import tvm

    from autonl.backends.tvm import get_target
    from autonl.backends.tvm.compile import build, pre_tuning, to_relax, tune, vm_runner
    target = tvm.target.Target(get_target("host").target_dict())
    mod, params = to_relax(fp32, shape)
    info = tune(pre_tuning(mod, target, True), target, work_dir, trials)
    print(f"  tuning {work_dir}: {info['tasks']} tasks, {info['tasks_with_records']} already had records, "
          f"{info['trials_run']} new trials in {info['seconds']:.0f} s", flush=True)
    ex, main_params = build(mod, target, params, True, work_dir)
    return vm_runner(ex, main_params)


def runners_for(name: str, resolution: int, threads: int, batch: int, tune_trials: int = 0,
                tuning_dir: str = "runs/bench-tuning") -> dict:
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
    if tune_trials > 0:
        runners["tvm-tuned"] = tvm_tuned_runner(fp32, shape, tune_trials,
                                                os.path.join(tuning_dir, f"{name}-b{batch}-r{resolution}"))
    return runners


def measure(runners: dict, x: np.ndarray, rounds: int, calls: int) -> dict:
    times = {k: [] for k in runners}
    for fn in runners.values():      # warm-up
        for _ in range(3):
            fn(x)
    for _ in range(rounds):
        for k, fn in runners.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                fn(x)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="mobilenetv2,autonl-s,autonl-l")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--tvm-tune-trials", type=int, default=0, help="add tvm-tuned: MetaSchedule trials per task")
    ap.add_argument("--tuning-dir", default="runs/bench-tuning", help="where the tuning databases live")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    print(f"{args.resolution}x{args.resolution}, {args.threads} threads, median of {args.rounds} rounds x "
          f"{args.calls} calls, runtimes alternating; ratio = runtime time / reference time")
    for name in args.nets.split(","):
        for batch in map(int, args.batches.split(",")):
            runners = runners_for(name, args.resolution, args.threads, batch, args.tvm_tune_trials, args.tuning_dir)
            x = reference_input(build_preset(name, resolution=args.resolution), batch=batch)
            t = measure(runners, x, args.rounds, args.calls)
            results.append({"net": name, "batch": batch, "ms": {k: v * 1e3 for k, v in t.items()}})
            cols = "  ".join(f"{k} {v * 1e3:7.2f} ms" for k, v in t.items())
            ratios = "  ".join(f"{k}/torch {v / t['torch']:.2f}x" for k, v in t.items() if k != "torch")
            vs_ort = "  ".join(f"{k}/ort-fp32 {v / t['ort-fp32']:.2f}x" for k, v in t.items()
                               if k not in ("torch", "ort-fp32"))
            print(f"{name:<12} batch {batch}:  {cols}\n{'':<21}{ratios}  {vs_ort}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"resolution": args.resolution, "threads": args.threads, "tvm_tune_trials": args.tvm_tune_trials,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
