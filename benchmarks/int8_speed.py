"""int8 against fp32 in onnxruntime, per quantisation scheme (issue #38).

Builds each network (presets at ``--resolution``, 1000 classes, random weights and random BN
statistics: speed does not depend on their values), exports it as `autonl compile` does
(``export_onnx(deploy_model(...))``: BN folded, LightNL lowered to primitives), calibrates on
``--calib-images`` random-normal images and quantises it with each ``--variants`` scheme of
:data:`autonl.backends.onnx.runtime.INT8_SCHEMES` (``all`` is every op onnxruntime can
quantise, what ``quantize_int8`` did alone before issue #38). fp32 and every variant are then
timed alternately, in interleaved rounds (:func:`autonl.backends.latency.timing.measure_all`:
each model's figure is its lowest round median), on onnxruntime's shared pool of ``--threads``
threads; one process per thread count, since that pool is made once per process.

The table gives each network, thread count and variant its milliseconds (batch 1) and the
ratio to fp32 of the same network and threads. With ``--profile``, onnxruntime's profiler
runs fp32 and the ``--profile-variants`` of ``--profile-network`` at 1 thread, and prints
the kernel time per op type and per part of the network (1x1 convs, depthwise convs, other
convs, SiLU, SE, LightNL, Q/DQ), and the LightNL nodes that take longest. With
``--accuracy MODEL`` (a trained model or run folder; ``--data`` its dataset), it also gives
the validation accuracy of fp32 and of each variant and each ``--calib-methods`` x
``--calib-counts`` calibration.

    python benchmarks/int8_speed.py [--networks autonl-s autonl-l mobilenetv2] [--threads 1 2]
        [--resolution 224] [--rounds 9] [--variants all fp32-silu ...] [--profile]
        [--accuracy /tmp/i8/train --data digits] [--out benchmarks/results/int8_speed]

Writes ``PREFIX.json`` and ``PREFIX.txt``.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
import numpy as np

NETWORKS = ["autonl-s", "autonl-l", "mobilenetv2"]


# ---- building the models -------------------------------------------------------------------

def build(args, folder: Path) -> dict:
    """fp32 and each variant of each network in ``folder/<net>/<variant>.onnx``; facts."""
    import onnx

    from autonl.backends.loading import deploy_model, load_model_or_graph, reference_input
    from autonl.backends.onnx.export import export_onnx
    from autonl.backends.onnx.runtime import calibration_batches, int8_scheme, quantize_int8, run, session
    from autonl.ir import build_preset

    facts = {}
    for net in args.networks:
        graph = build_preset(net, resolution=args.resolution, num_classes=1000)
        fp32 = export_onnx(deploy_model(load_model_or_graph(graph)))
        (folder / net).mkdir(parents=True, exist_ok=True)
        onnx.save(fp32, folder / net / "fp32.onnx")
        rng = np.random.default_rng(0)
        images = rng.standard_normal((args.calib_images, 3, args.resolution, args.resolution), dtype=np.float32)
        fp_sess = session(fp32)
        calib, _ = calibration_batches(fp_sess, [images[i:i + 16] for i in range(0, len(images), 16)])
        x = reference_input(graph, batch=2)
        ref = run(fp_sess, x)
        facts[net] = {"fp32": {"nodes": len(fp32.graph.node)}}
        for v in args.variants:
            watch = harness.Stopwatch()
            q, _ = quantize_int8(fp32, calib, "minmax", scheme=v)
            secs = watch.seconds
            onnx.save(q, folder / net / f"{v}.onnx")
            ops = collections.Counter(n.op_type for n in q.graph.node)
            diff = float(np.abs(run(session(q), x) - ref).max())
            facts[net][v] = {"scheme": int8_scheme(v).describe(), "quantize_s": round(secs, 1),
                             "nodes": len(q.graph.node), "quantize_linear": ops["QuantizeLinear"],
                             "max_abs_diff_vs_fp32": diff, "fp32_logit_range": float(np.abs(ref).max())}
            print(f"  {net:12s} {v:28s} quantised in {secs:5.1f} s, {len(q.graph.node)} nodes, "
                  f"max |int8 - fp32| {diff:.3g} (logits up to {np.abs(ref).max():.3g})", flush=True)
    return facts


# ---- timing (one process per thread count) --------------------------------------------------

def worker_time(args) -> None:
    from autonl.backends.latency.timing import Effort, measure_all, wall_timer
    from autonl.backends.onnx.runtime import run, session

    folder = Path(args.worker)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, args.resolution, args.resolution), dtype=np.float32)
    timers, keep = {}, []
    for net in args.networks:
        for v in ["fp32", *args.variants]:
            sess = session(folder / net / f"{v}.onnx", threads=args.threads[0], shared=True)
            keep.append(sess)
            timers[(net, v)] = wall_timer(lambda s=sess: run(s, x))
    effort = Effort(rounds=args.rounds, round_seconds=args.round_seconds)
    m = measure_all(timers, effort)
    out = {"threads": args.threads[0], "effort": effort.as_dict(), "others_cpus": m.others_cpus,
           "busy_warning": m.busy_warning(args.threads[0]),
           "rows": [{"network": net, "variant": v, **t.as_dict()} for (net, v), t in m.timings.items()]}
    (folder / f"timing-{args.threads[0]}.json").write_text(json.dumps(out))


# ---- profile -------------------------------------------------------------------------------

SUFFIX = re.compile(r"(_nchwc|_token_\d+|/.*|_QuantizeLinear.*|_DequantizeLinear.*|_quant.*|_Transpose.*|"
                    r"_output_\d+.*|_ReorderInput.*|_ReorderOutput.*)$")


def categories(model) -> dict[str, str]:
    """Each node of the fp32 (or quantised) model: the part of the network it belongs to."""
    from autonl.backends.onnx.runtime import silu_pairs

    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    silu = {n.name for pair in silu_pairs(model.graph) for n in pair}
    cat = {}
    for n in model.graph.node:
        if n.name.startswith("lightnl_"):
            c = "LightNL"
        elif ".se." in n.name or n.name.endswith(".se") or ".se_" in n.name:
            c = "SE"
        elif n.name in silu or n.op_type == "QuickGelu":
            c = "SiLU"
        elif n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kernel = shapes.get(n.input[1], (0, 0, 1, 1))[2:]
            c = "conv depthwise" if group > 1 else "conv 1x1" if all(k == 1 for k in kernel) else "conv other"
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            c = "Q/DQ"
        else:
            c = f"other ({n.op_type})"
        cat[n.name] = c
    return cat


def worker_profile(args) -> None:
    import onnx
    import onnxruntime as ort

    from autonl.backends.latency.timing import wall_timer

    folder = Path(args.worker)
    net = args.profile_network
    cat = categories(onnx.load(folder / net / "fp32.onnx"))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, args.resolution, args.resolution), dtype=np.float32)
    out = {}
    for v in ["fp32", *args.profile_variants]:
        path = folder / net / f"{v}.onnx"
        vcat = {**cat, **{k: c for k, c in categories(onnx.load(path)).items() if k not in cat}}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(folder / f"profile-{v}")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(10):
            sess.run(None, {name: x})
        # the profile starts with the session; time only the runs after warming up
        wall = float(np.mean(wall_timer(lambda: sess.run(None, {name: x}))(args.profile_runs)))
        events = json.loads(Path(sess.end_profiling()).read_text())
        runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        start = sorted(e["ts"] for e in runs)[10] if len(runs) > 10 else 0
        by_op, by_part, by_node = collections.Counter(), collections.Counter(), collections.Counter()
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
                continue
            node, op = e["name"][:-len("_kernel_time")], e["args"]["op_name"]
            ms = e["dur"] / 1e3 / args.profile_runs
            by_op[op] += ms
            base = SUFFIX.sub("", node)
            part = ("Q/DQ" if op in ("QuantizeLinear", "DequantizeLinear") else
                    "layout" if op in ("ReorderInput", "ReorderOutput") else
                    vcat.get(node) or vcat.get(base) or
                    ("LightNL" if node.startswith("lightnl_") else f"other ({op})"))
            by_part[part] += ms
            if node.startswith("lightnl_"):
                by_node[f"{node} [{op}]"] += ms
        out[v] = {"wall_ms_profiled": wall, "kernel_ms": sum(by_op.values()),
                  "by_op": dict(by_op.most_common()), "by_part": dict(by_part.most_common()),
                  "lightnl_nodes": dict(by_node.most_common(args.profile_top))}
    (folder / "profile.json").write_text(json.dumps(out))


# ---- accuracy on a trained model ------------------------------------------------------------

def accuracy_check(args) -> dict:
    from autonl.backends.loading import deploy_model, load_model_or_graph
    from autonl.backends.onnx.compile import load_data
    from autonl.backends.onnx.export import export_onnx
    from autonl.backends.onnx.runtime import accuracy, batches, calibration_batches, quantize_int8, session

    model = load_model_or_graph(args.accuracy)
    data = args.data or (model.data or {}).get("data")
    fp32 = export_onnx(deploy_model(model))
    fp_sess = session(fp32)
    _, val, _ = load_data(data, model, max(args.calib_counts), None, False)
    val_batches = list(batches(val))
    fp = accuracy(fp_sess, val_batches)
    print(f"accuracy of {args.accuracy} on {data} (validation, {fp['images']} images): fp32 {fp['accuracy']:.4f}")
    rows = []
    for n in args.calib_counts:
        train, _, _ = load_data(data, model, n, None, False)
        calib, _ = calibration_batches(fp_sess, (x for x, _ in batches(train, n)))
        used = sum(len(c) for c in calib)
        for method in args.calib_methods:
            for v in args.accuracy_variants:
                q, _ = quantize_int8(fp32, calib, method, scheme=v)
                a = accuracy(session(q), val_batches)["accuracy"]
                rows.append({"variant": v, "method": method, "calib_images": used, "int8": a,
                             "change_points": 100 * (a - fp["accuracy"])})
                change = 100 * (a - fp["accuracy"])
                print(f"  {v:26s} {method:10s} {used:4d} images: int8 {a:.4f} ({change:+.1f} points)", flush=True)
    return {"model": str(args.accuracy), "data": data, "images": fp["images"], "fp32": fp["accuracy"], "rows": rows}


# ---- report --------------------------------------------------------------------------------

def table(timing: list[dict], facts: dict) -> list[str]:
    lines = [f"{'network':12s} {'threads':>7s}  {'variant':28s} {'ms':>8s} {'p10-p90 ms':>15s} {'x fp32':>7s}  "
             f"{'max|d| vs fp32':>14s}"]
    for t in timing:
        fp = {r["network"]: r["ms"] for r in t["rows"] if r["variant"] == "fp32"}
        for r in t["rows"]:
            f = facts.get(r["network"], {}).get(r["variant"], {})
            d = f.get("max_abs_diff_vs_fp32")
            lines.append(f"{r['network']:12s} {t['threads']:7d}  {r['variant']:28s} {r['ms']:8.2f} "
                         f"{r['p10_ms']:7.2f}-{r['p90_ms']:<7.2f} {r['ms'] / fp[r['network']]:7.2f}  "
                         f"{'' if d is None else f'{d:14.3g}'}")
        if t.get("busy_warning"):
            lines.append(f"  ({t['threads']} thread(s)) {t['busy_warning']}")
    return lines


def profile_lines(profile: dict, net: str) -> list[str]:
    variants = list(profile)
    head = f"{'':26s}" + "".join(f"{v[:18]:>19s}" for v in variants)
    lines = [f"profile: {net}, 1 thread, kernel ms per run (onnxruntime profiler)",
             "wall ms per run while profiled:" + "".join(f"{profile[v]['wall_ms_profiled']:19.2f}" for v in variants),
             "sum of kernel times:      " + "".join(f"{profile[v]['kernel_ms']:19.2f}" for v in variants),
             "", "by part of the network", head]
    parts = sorted({p for v in variants for p in profile[v]["by_part"]},
                   key=lambda p: -max(profile[v]["by_part"].get(p, 0) for v in variants))
    for p in parts:
        lines.append(f"  {p[:24]:24s}" + "".join(f"{profile[v]['by_part'].get(p, 0):19.3f}" for v in variants))
    lines += ["", "by op type", head]
    ops = sorted({o for v in variants for o in profile[v]["by_op"]},
                 key=lambda o: -max(profile[v]["by_op"].get(o, 0) for v in variants))
    for o in ops:
        lines.append(f"  {o[:24]:24s}" + "".join(f"{profile[v]['by_op'].get(o, 0):19.3f}" for v in variants))
    for v in variants:
        lines += ["", f"top LightNL nodes, {v} (ms per run)"]
        lines += [f"  {k:60s} {ms:7.3f}" for k, ms in profile[v]["lightnl_nodes"].items()]
    return lines


def parse_args() -> argparse.Namespace:
    from autonl.backends.onnx.runtime import DEFAULT_INT8_SCHEME, INT8_SCHEMES

    ap = harness.parser(__doc__)
    ap.add_argument("--networks", nargs="+", default=NETWORKS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("-r", "--resolution", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (more for unconfirmed ones)")
    ap.add_argument("--round-seconds", type=float, default=0.1, help="at least this long per model and round")
    ap.add_argument("--variants", nargs="+", default=list(INT8_SCHEMES), choices=list(INT8_SCHEMES),
                    metavar="VARIANT", help=f"schemes of INT8_SCHEMES [default: all of them: {' '.join(INT8_SCHEMES)}]")
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--profile", action="store_true", help="onnxruntime's profile of fp32 and --profile-variants")
    ap.add_argument("--profile-network", default="autonl-s")
    ap.add_argument("--profile-variants", nargs="+", default=None,
                    help=f"[default: all and the default scheme, {DEFAULT_INT8_SCHEME}]")
    ap.add_argument("--profile-runs", type=int, default=50)
    ap.add_argument("--profile-top", type=int, default=10)
    ap.add_argument("--no-timing", action="store_true", help="only the profile and/or accuracy")
    ap.add_argument("--accuracy", default=None, help="a trained model or run folder: accuracy per variant")
    ap.add_argument("--data", default=None, help="its dataset [default: the one the model records]")
    ap.add_argument("--accuracy-variants", nargs="+", default=None,
                    help=f"[default: all and the default scheme, {DEFAULT_INT8_SCHEME}]")
    ap.add_argument("--calib-methods", nargs="+", default=["minmax", "percentile", "entropy"])
    ap.add_argument("--calib-counts", nargs="+", type=int, default=[64, 256, 512])
    ap.add_argument("--out", "--json", dest="out", default=str(harness.RESULTS / "int8_speed"),
                    help="writes OUT.json and OUT.txt (a trailing .json is dropped)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    default_pair = list(dict.fromkeys(["all", DEFAULT_INT8_SCHEME]))
    args.profile_variants = args.profile_variants or [v for v in default_pair if v in args.variants]
    args.accuracy_variants = args.accuracy_variants or default_pair
    return args


def time_and_profile(args, result: dict) -> list[str]:
    """Build the models, time them (one worker process per thread count) and profile them
    (``--profile``), filling ``result``; returns the report's lines."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp:
        folder = Path(tmp)
        need = args.networks if not args.no_timing else ([args.profile_network] if args.profile else [])
        if need:
            build_args = argparse.Namespace(**{**vars(args), "networks": need})
            print("building and quantising ...", flush=True)
            result["models"] = build(build_args, folder)
        base = [sys.executable, str(Path(__file__).resolve()), "--worker", tmp, "-r", str(args.resolution),
                "--variants", *args.variants]
        if not args.no_timing:
            timing = []
            for t in args.threads:
                print(f"timing with {t} thread(s) ...", flush=True)
                subprocess.run([*base, "--threads", str(t), "--networks", *args.networks, "--rounds", str(args.rounds),
                                "--round-seconds", str(args.round_seconds)], check=True)
                timing.append(json.loads((folder / f"timing-{t}.json").read_text()))
            result["timing"] = timing
            lines += table(timing, result["models"]) + [""]
        if args.profile:
            print(f"profiling {args.profile_network} ...", flush=True)
            subprocess.run([*base, "--worker-profile", "--networks", args.profile_network, "--profile-network",
                            args.profile_network, "--profile-variants", *args.profile_variants,
                            "--profile-runs", str(args.profile_runs), "--profile-top", str(args.profile_top)],
                           check=True)
            result["profile"] = json.loads((folder / "profile.json").read_text())
            lines += profile_lines(result["profile"], args.profile_network) + [""]
    return lines


def main() -> None:
    from autonl.backends.onnx.runtime import DEFAULT_INT8_SCHEME, INT8_SCHEMES

    args = parse_args()
    if args.worker:
        (worker_profile if args.worker_profile else worker_time)(args)
        return

    prefix = harness.results_prefix(args.out)
    cpu = harness.cpu_model()
    print(f"CPU: {cpu}")
    import onnxruntime
    started = harness.Stopwatch()
    result = {"cpu": cpu, "onnxruntime": onnxruntime.__version__, "resolution": args.resolution, "batch": 1,
              "calib_images": args.calib_images, "default_scheme": DEFAULT_INT8_SCHEME,
              "schemes": {v: INT8_SCHEMES[v].describe() for v in args.variants}, "command": " ".join(sys.argv)}
    lines = [f"CPU: {cpu}; onnxruntime {onnxruntime.__version__}; {args.resolution}x{args.resolution}, batch 1; "
             f"default scheme: {DEFAULT_INT8_SCHEME}", f"command: python {' '.join(sys.argv)}", ""]
    lines += [f"  {v:28s} {INT8_SCHEMES[v].describe()}" for v in args.variants] + [""]
    lines += time_and_profile(args, result)
    if args.accuracy:
        result["accuracy"] = acc = accuracy_check(args)
        lines += [f"accuracy: {acc['model']} on {acc['data']} (validation, {acc['images']} images): "
                  f"fp32 {acc['fp32']:.4f}"]
        lines += [f"  {r['variant']:28s} {r['method']:10s} {r['calib_images']:4d} images: int8 {r['int8']:.4f} "
                  f"({r['change_points']:+.1f} points)" for r in acc["rows"]]
    result["seconds"] = round(started.seconds, 1)
    text = "\n".join(lines).rstrip() + "\n"
    print("\n" + text)
    harness.write_results(prefix, result, text)
    print(f"wrote {prefix}.json and {prefix}.txt")


if __name__ == "__main__":
    main()
