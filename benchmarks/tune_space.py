"""A space-wide tuning database against tuning each network by itself.

`autonl tune-space` tunes every distinct workload of a search space once; a network derived
from the space then compiles with that database and no new trials. This benchmark checks the
claim that this costs nothing at run time: it tunes one database for a small space (a stem,
three MBConv blocks with kernel 3/5 and skip choices, a LightNL candidate after each), then,
for a few networks derived from the space at random, (a) compiles against the space's
database (0 new trials: counted), (b) tunes the network by itself with the same trials per
task, and (c) tunes it by itself again with another search seed, and times the three builds in
alternating rounds (median of all calls). (c) against (b) is the noise of tuning itself (with
tens of trials per task, two searches of one network land on different kernels); the space's
database is "as fast as tuned by itself" when (a) against (b) lies within that noise.

    python benchmarks/tune_space.py [--out runs/tune-space-bench] [--trials 16] [--nets 3]
                                    [--resolution 64] [--rounds 20] [--calls 20] [--threads N]
                                    [--json F]
"""
from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import harness

from autonl.backends.latency.timing import median_of_calls
from autonl.backends.loading import deploy_model, load_model_or_graph, reference_input
from autonl.backends.onnx.export import export_onnx
from autonl.backends.tvm import get_target
from autonl.backends.tvm.compile import build, pre_tuning, to_relax, vm_runner
from autonl.backends.tvm.space import tune_space
from autonl.backends.tvm.threads import set_tvm_threads
from autonl.backends.tvm.tuning import tune
from autonl.ir import parse_graph
from autonl.passes import PassManager, SearchSpace, search_space_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import space_ir, space_toml  # noqa: E402  (the suite's small space, wider here)


def main() -> None:
    import tvm

    ap = harness.parser(__doc__)
    ap.add_argument("--out", default="runs/tune-space-bench")
    ap.add_argument("--trials", type=int, default=16, help="trials per task, on average, for both")
    ap.add_argument("--nets", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="TVM threads (tuning and timing)")
    ap.add_argument("--json")
    args = ap.parse_args()
    set_tvm_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "space.toml").write_text(space_toml("mbconv_[12]"))
    graph = PassManager(["shape-inference", *search_space_pipeline(str(out / "space.toml"))])(
        parse_graph(space_ir(args.resolution, (16, 24, 128), "smallspace"))).graph
    target = tvm.target.Target(get_target("host").target_dict())
    watch = harness.Stopwatch()
    info = tune_space(graph, out / "space-db", "host", args.trials, None, False, log=print)
    print(f"tune-space: {info['tasks']} distinct workloads, {info['trials_run']} trials, "
          f"{watch.seconds:.0f} s", flush=True)
    space = SearchSpace(graph)
    rng = random.Random(args.seed)
    rows = []
    for k in range(args.nets):
        derived = space.freeze(space.random(rng))
        model = load_model_or_graph(derived, 0)
        shape = list(derived.inputs[next(iter(derived.inputs))].shape)
        mod, params = to_relax(export_onnx(deploy_model(model)), shape, "nhwc")   # tuned, prepacked
        pre = pre_tuning(mod, target, True)
        covered = tune(pre, target, str(out / "space-db"), 0)          # counts only
        own_watch = harness.Stopwatch()
        own = tune(pre, target, str(out / f"own-{k}"), args.trials, progress=False)
        own_s = own_watch.seconds
        tune(pre, target, str(out / f"own-{k}-seed1"), args.trials, progress=False, seed=1)
        runners = {name: vm_runner(*build(mod, target, params, True, str(out / folder)))
                   for name, folder in (("space-db", "space-db"), ("own", f"own-{k}"),
                                        ("own-seed1", f"own-{k}-seed1"))}
        x = reference_input(derived)
        ms = median_of_calls({name: (lambda fn=fn: fn(x)) for name, fn in runners.items()}, args.rounds, args.calls,
                             warmup=5)
        row = {"net": k, "tasks": covered["tasks"], "covered_by_space_db": covered["tasks_covered"],
               "new_trials_with_space_db": covered["trials_run"], "own_trials": own["trials_run"],
               "own_tuning_s": own_s, "space_db_ms": ms["space-db"], "own_ms": ms["own"],
               "own_seed1_ms": ms["own-seed1"], "ratio": ms["space-db"] / ms["own"],
               "tuning_noise": ms["own-seed1"] / ms["own"]}
        rows.append(row)
        print(f"network {k}: {row['tasks']} tasks, space database covers {row['covered_by_space_db']} (0 new "
              f"trials); with it {row['space_db_ms']:.3f} ms, tuned by itself ({row['own_trials']} trials, "
              f"{own_s:.0f} s) {row['own_ms']:.3f} ms: ratio {row['ratio']:.3f}; tuned by itself with seed 1 "
              f"{row['own_seed1_ms']:.3f} ms: ratio {row['tuning_noise']:.3f} (the noise of tuning)", flush=True)
    if args.json:
        harness.write_json(args.json, {"args": vars(args), "space": info, "networks": rows})


if __name__ == "__main__":
    main()
