"""Train and search step times on an idle and on a busy machine, by thread count and OpenMP
wait policy: the table behind the default of ``autonl.backends.cpu``.

    python benchmarks/busy_machine.py [--resolution 64] [--batch 32] [--steps 4] [--busy 0,1,2]
                                      [--json benchmarks/results/busy_machine.json]

Each row runs in a fresh process (OpenMP reads its wait policy once, when torch loads it),
beside 0, 1 or 2 other CPU-bound processes (Python loops, one core each). Workloads, with
random batches so that only the step is timed:

* ``train``: a MobileNetV2 (the ``mobilenetv2`` preset, 10 classes) forward, backward and SGD
  step, as ``autonl train`` runs it (``train_step``);
* ``search``: the AutoNL search space's single-path supernet, a step after the warm-up with
  the cost term, as ``autonl search`` runs it (``search_step``).

Rows: ``--threads`` 1 and every count up to the CPUs, each with OpenMP's default waiting
(spin, then sleep), ``OMP_WAIT_POLICY=ACTIVE`` and ``PASSIVE``, ``GOMP_SPINCOUNT`` 1k and 10k; ``fitted`` (threads = the CPUs
not busy at start-up, default waiting); and ``autonl``'s default, marked ``*``: threads
fitted to the free cores as the loop runs (``autonl.backends.cpu.FreeCores``). The row
``2 thr, default`` (one thread per CPU, OpenMP's default waiting) is what autonl did before. A step is the
median of ``--steps`` timed steps after one untimed; a row stops early after ``--row-limit``
seconds (the spinning rows beside load take tens of seconds a step).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import harness

RESULTS = harness.RESULTS


def child(workload: str, threads: int | None, resolution: int, batch: int, steps: int, limit: float) -> dict:
    """Runs in a fresh process whose environment the parent set; times one workload.
    ``threads`` None: autonl's default, threads fitted to the free cores as the loop runs
    (``FreeCores``, as ``Loop.run_steps`` ticks it), given two seconds to settle first."""
    from autonl.backends.cpu import FreeCores, torch_threads
    import torch
    from torch import nn

    from autonl.ir import build_preset

    fit = None
    if threads is None:
        threads = torch_threads(None)[0]
        fit = FreeCores(torch.set_num_threads, threads, every_s=1.0)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    if workload == "train":
        from autonl.backends.torch.train.loop import cosine_with_warmup, make_optimizer
        from autonl.backends.torch.lower import to_torch
        from autonl.backends.torch.train import TrainConfig, train_step
        model = to_torch(build_preset("mobilenetv2", resolution=resolution, num_classes=10))
        cfg = TrainConfig(data="digits", batch_size=batch, steps=100)
        opt = make_optimizer(model.parameters(), cfg)
        sched = cosine_with_warmup(opt, 5, 100)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            train_step(model, opt, sched, x, y, loss_fn)
    else:
        from autonl.backends.torch.search import SearchConfig, make_optimizers, search_step
        from autonl.backends.torch.search.supernet import Supernet
        supernet = Supernet(build_preset("search-space", resolution=resolution, num_classes=10))
        cfg = SearchConfig(data="digits", target_macs=300e6, batch_size=batch, steps=100, warmup_steps=0)
        opts = make_optimizers(supernet, cfg)
        ce = nn.CrossEntropyLoss()

        def step():
            search_step(supernet, supernet, opts, x, y, False, cfg, ce)
    step()
    settle = time.perf_counter() + 2.0
    while fit is not None and time.perf_counter() < settle:
        step()
        fit.tick()
    # its own loop, not median_of_calls (autonl.backends.latency.timing): autonl's default row
    # ticks FreeCores between steps (as Loop.run_steps does) and a row stops at --row-limit
    # seconds, neither of which a median of calls can do
    times = []
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if fit is not None:
            fit.tick()
        if time.perf_counter() - start > limit:
            break
    return {"step_s": statistics.median(times), "steps": len(times), "threads": torch.get_num_threads()}


# OpenMP's default (spin up to 300k iterations, then sleep), always spinning, sleeping at
# once, and GNU OpenMP's GOMP_SPINCOUNT between the two (spins of about 1 ns each)
POLICIES = ("default", "ACTIVE", "PASSIVE", "spin1000", "spin10000")
BUSY_LOOP = "import os\nos.nice(0)\nwhile True: pass\n"


def busy_cpus(interval: float = 0.5) -> float:
    """CPUs busy now (from /proc/stat over ``interval`` seconds)."""
    import psutil
    return sum(psutil.cpu_percent(interval=interval, percpu=True)) / 100


def row_env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                                                           "OMP_NUM_THREADS")}
    if policy in ("ACTIVE", "PASSIVE"):
        env["OMP_WAIT_POLICY"] = policy
    elif policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    return env


def run_row(workload: str, threads: int | None, policy: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", workload, "--resolution", str(args.resolution), "--batch",
           str(args.batch), "--steps", str(args.steps), "--row-limit", str(args.row_limit)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=row_env(policy), timeout=args.row_limit * 20 + 600)
    if out.returncode != 0:
        raise SystemExit(f"error: the {workload} row failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--busy", default="0,1,2", help="numbers of CPU-bound processes beside the step, comma-separated")
    ap.add_argument("--workloads", default="train,search")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every row (medians)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="wait policies of the rows, comma-separated")
    ap.add_argument("--threads-rows", default=None, help="thread counts of those rows, comma-separated [default: 1..CPUs]")
    ap.add_argument("--row-limit", type=float, default=40.0, help="seconds of timed steps a row may take at most")
    ap.add_argument("--json", default=str(RESULTS / "busy_machine.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.resolution, args.batch, args.steps, args.row_limit)))
        return

    from autonl.backends.cpu import usable_cpus
    cpus = usable_cpus()
    cpu_name = harness.cpu_model()
    print(f"{args.resolution}x{args.resolution}, batch {args.batch}, {cpus} CPUs ({cpu_name}); median of "
          f"{args.steps} steps a row, median of {args.rounds} alternating rounds, each row a fresh process", flush=True)
    counts = [int(t) for t in args.threads_rows.split(",")] if args.threads_rows else range(1, cpus + 1)
    configs = [(t, p) for t in counts for p in args.policies.split(",")]
    configs += [("fitted", "default"), (None, "autonl")]
    rows = []
    for n_busy in (int(b) for b in args.busy.split(",")):
        hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n_busy)]
        try:
            time.sleep(1.0)
            for workload in args.workloads.split(","):
                found: dict = {}
                for _round in range(args.rounds):    # alternating: drift on a shared machine hits every row alike
                    for threads, policy in configs:
                        asked = max(1, round(cpus - busy_cpus())) if threads == "fitted" else threads
                        found.setdefault((threads, policy), []).append(run_row(workload, asked, policy, args))
                for (threads, policy), rs in found.items():
                    label = ("autonl default" if policy == "autonl" else
                             "fitted" if threads == "fitted" else f"{threads} thr, {policy.lower()}")
                    row = {"busy": n_busy, "workload": workload, "config": label, "policy": policy,
                           "threads": statistics.median(r["threads"] for r in rs),
                           "step_s": statistics.median(r["step_s"] for r in rs),
                           "rounds": [r["step_s"] for r in rs]}
                    rows.append(row)
                    print(f"busy {n_busy}  {workload:<6}  {label:<22} {row['threads']:g} thr {row['step_s']:8.3f} "
                          f"s/step", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()

    idle = {(r["workload"], r["config"]): r["step_s"] for r in rows if r["busy"] == 0}
    print("\n| busy | workload | row | threads | s/step | x its idle | x best idle |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        same = idle.get((r["workload"], r["config"]))
        best = min((v for (w, _), v in idle.items() if w == r["workload"]), default=None)
        ratio = lambda ref: f"{r['step_s'] / ref:.2f}" if ref else "-"
        mark = " *" if r["policy"] == "autonl" else ""
        print(f"| {r['busy']} | {r['workload']} | {r['config']}{mark} | {r['threads']} | {r['step_s']:.3f} | {ratio(same)} | "
              f"{ratio(best)} |")
    harness.write_json(args.json, {"resolution": args.resolution, "batch": args.batch, "cpus": cpus, "cpu": cpu_name,
                                   "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
