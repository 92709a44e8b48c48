"""Searching for a measured latency, end to end, as a user runs it (every step an `autonl`
command, printed):

1. `autonl latency-table` of the AutoNL space at 224x224 (10 classes, the digits' head) on
   onnxruntime with --threads 2;
2. `autonl latency-check` over --samples sub-networks: MAPE, Spearman, within ±5% / ±10%;
3. landing: `autonl search --target-latency` on the built-in digits (search at 32x32, cost
   from the table at 224) toward 30%, 50% and 70% of the way from the fastest to the slowest
   sub-network, `autonl derive`, then `autonl bench` of the derived network at 224 (same
   backend and threads, every network timed together, scaled to the table's machine speed):
   target, predicted, measured, error, MACs, LightNL blocks;
4. why it matters: at the middle target, MAC-target searches (`--target-macs`) bracketing
   the latency network's measured latency, and the one that measures closest to it, side by
   side with the latency network: MACs, measured latency, LightNL positions.

    python benchmarks/latency_landing.py [--out runs/latency] [--samples 50] [--steps 300]

Writes benchmarks/results/latency_landing.{txt,json} (and the check's scatter plot) unless
--no-save. Every folder under --out is kept; a finished step is read back, not rerun.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import harness

class Steps:
    """The `autonl` commands of the benchmark, each printed and logged; a finished one (its
    ``done`` file exists) is read back, not rerun."""

    def __init__(self):
        self.autonl = str(Path(sys.executable).parent / "autonl")
        self.log: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.log.append(line)

    def run(self, *cmd, done: Path | None = None) -> str:
        self.say("$ autonl " + " ".join(map(str, cmd)))
        if done is not None and done.exists():
            self.say("  (done before; read back)")
            return ""
        watch = harness.Stopwatch()
        proc = subprocess.run([self.autonl, *map(str, cmd)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"failed:\n{proc.stderr[-2000:]}")
        self.say(f"  ({watch.seconds:.0f} s)")
        return proc.stdout


def parse_args() -> argparse.Namespace:
    ap = harness.parser(__doc__, threads=2, first="\n")
    ap.add_argument("--out", default="runs/latency")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--mac-factors", type=float, nargs="+", default=[0.85, 1.0, 1.15],
                    help="MAC targets, as multiples of the middle latency network's MACs")
    ap.add_argument("--no-save", action="store_true")
    return ap.parse_args()


def table_and_check(steps: Steps, args, out: Path) -> tuple[Path, dict, dict]:
    """Steps 1 and 2: the latency table and its check; (table path, table, check)."""
    common = ["--backend", args.backend, "--threads", args.threads]
    table = out / "table.json"
    steps.run("latency-table", "search-space", "-r", 224, "--classes", 10, *common, "--out", table, done=table)
    tdoc = json.loads(table.read_text())
    check_json = out / "check.json"
    steps.run("latency-check", table, "--samples", args.samples, "--json", check_json, done=check_json)
    check = json.loads(check_json.read_text())
    steps.say(f"table: {tdoc['provenance']['runtime']} {tdoc['provenance']['runtime_version']}, {args.threads} "
              f"threads, {tdoc['provenance']['cpu']}; {tdoc['provenance']['blocks_measured']} blocks; fixed part "
              f"{tdoc['fixed_ms']:.3f} ms, blocks in context {tdoc['fixed'].get('scale', 1.0):.3f}x alone")
    steps.say(f"check over {check['samples']} sub-networks: MAPE {check['mape']:.2%}, Spearman "
              f"{check['spearman']:.3f} (MACs alone {check['spearman_macs']:.3f}), within ±5% "
              f"{check['within_5pct']:.0%}, within ±10% {check['within_10pct']:.0%}, largest error "
              f"{check['max_abs_error']:.1%}, mean error {check['bias']:+.2%}")
    return table, tdoc, check


def land(steps: Steps, args, out: Path, table: Path) -> tuple[list[dict], list[dict], dict, tuple[float, float]]:
    """Steps 3 and 4: latency searches toward each fraction of the space's range and MAC
    searches around the middle one, each derived, then all benched together at the table's
    machine speed; (latency rows, MAC rows, the middle latency row, the range)."""
    # the range of the space by the table (predict() on the stored graph, as the search does)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autonl.backends.latency import LatencyTable
    t = LatencyTable.read(table)
    space_graph = t.space_graph()
    lo, hi = t.bounds(space_graph)
    steps.say(f"space at 224 by the table: fastest {lo:.3f} ms, slowest {hi:.3f} ms")

    def search_derive(name: str, target_args: list) -> dict:
        run_dir, model = out / name, out / f"{name}.model"
        steps.run("search", "--data", "digits", "-r", 32, *target_args, "--steps", args.steps, "--warmup-steps",
                  args.steps // 3, "--batch-size", 32, "--train-size", 2048, "--seed", 0, "--out", run_dir,
                  done=run_dir / "result.json")
        steps.run("derive", run_dir, "--out", model, done=model / "graph.json")
        result = json.loads((run_dir / "result.json").read_text())
        decisions = json.loads((run_dir / "decisions.json").read_text())
        return {"name": name, "predicted_ms": t.predict(space_graph, decisions), "lightnl_at": result["lightnl_at"],
                "at224": str(model / "graph_at_cost_resolution.ir"), "result": result}

    rows = []
    for f in args.fractions:
        target = lo + f * (hi - lo)
        r = search_derive(f"latency_{int(round(f * 100))}", ["--target-latency", f"{target:.3f}ms",
                                                             "--latency-table", table])
        r.update({"fraction": f, "target_ms": target})
        rows.append(r)
    mid = min(rows, key=lambda r: abs(r["fraction"] - 0.5))
    mid_macs = mid["result"]["derived_macs"]
    macs_rows = []
    for k in args.mac_factors:
        m = mid_macs * k
        r = search_derive(f"macs_{int(round(k * 100))}", ["--target-macs", f"{m / 1e6:.1f}M", "--cost-resolution", 224])
        r.update({"factor": k, "target_macs": m})
        macs_rows.append(r)

    # every derived network at 224 timed together, round by round, at the table's machine speed
    bench_json = out / "bench.json"
    steps.run("bench", *[r["at224"] for r in rows + macs_rows], "--backend", args.backend, "--threads", args.threads,
              "--rounds", 30, "--table", table, "--json", bench_json, done=bench_json)
    measured = {m["source"]: m for m in json.loads(bench_json.read_text())["models"]}
    for r in rows + macs_rows:
        m = measured[r["at224"]]
        r.update({"measured_ms": m["ms"], "measured_p10_ms": m["p10_ms"], "measured_p90_ms": m["p90_ms"],
                  "raw_ms": m["raw_ms"], "macs": m["macs"]})
    for r in rows:
        r["error"] = r["measured_ms"] / r["target_ms"] - 1
    return rows, macs_rows, mid, (lo, hi)


def report(steps: Steps, args, rows: list[dict], macs_rows: list[dict], mid: dict) -> None:
    say = steps.say
    say("")
    say(f"{'target':>8} {'of range':>8} {'predicted':>9} {'measured':>9} {'error':>7} {'MACs':>8} {'LightNL':>7}")
    for r in rows:
        say(f"{r['target_ms']:>6.3f}ms {r['fraction']:>8.0%} {r['predicted_ms']:>7.3f}ms {r['measured_ms']:>7.3f}ms "
            f"{r['error']:>+7.1%} {r['macs'] / 1e6:>7.1f}M {len(r['lightnl_at']):>7}")
    worst = max(abs(r["error"]) for r in rows)
    say(f"largest landing error (measured vs target): {worst:.1%} ({'within' if worst <= 0.05 else 'outside'} ±5%)")
    closest = min(macs_rows, key=lambda r: abs(r["measured_ms"] / mid["measured_ms"] - 1))
    say("")
    say(f"at the {mid['fraction']:.0%} latency target ({mid['target_ms']:.3f} ms): the latency network against MAC "
        f"searches (MAC target = {', '.join(f'{k:g}' for k in args.mac_factors)} x its MACs)")
    say(f"{'network':<22} {'MACs':>8} {'predicted':>9} {'measured':>9} {'LightNL':>7}  positions")
    for r in [mid, *macs_rows]:
        mark = " <- closest latency" if r is closest else ""
        say(f"{r['name']:<22} {r['macs'] / 1e6:>7.1f}M {r['predicted_ms']:>7.3f}ms {r['measured_ms']:>7.3f}ms "
            f"{len(r['lightnl_at']):>7}  {', '.join(x.removeprefix('lightnl_') for x in r['lightnl_at']) or '-'}{mark}")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    table, tdoc, check = table_and_check(steps, args, out)
    rows, macs_rows, mid, (lo, hi) = land(steps, args, out, table)
    report(steps, args, rows, macs_rows, mid)
    if not args.no_save:
        results = harness.RESULTS
        harness.write_atomic(results / "latency_landing.txt", "\n".join(steps.log) + "\n")
        harness.write_atomic(results / "latency_landing.json", json.dumps(
            {"check": {k: v for k, v in check.items() if k != "rows"},
             "check_rows": [{k: v for k, v in r.items() if k != "decisions"} for r in check["rows"]],
             "table_provenance": tdoc["provenance"], "fixed_ms": tdoc["fixed_ms"],
             "context_scale": tdoc["fixed"].get("scale", 1.0), "bounds_ms": [lo, hi],
             "landing": [{k: v for k, v in r.items() if k != "result"} for r in rows],
             "mac_comparison": [{k: v for k, v in r.items() if k != "result"} for r in [mid, *macs_rows]]},
            indent=1) + "\n")
        png = (out / "check.json").with_suffix(".png")
        if png.exists():
            harness.write_atomic(results / "latency_check_onnx.png", png.read_bytes())
        steps.say(f"wrote {results / 'latency_landing.txt'}")


if __name__ == "__main__":
    main()
