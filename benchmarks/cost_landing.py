"""Does a search land on its MAC target? Searches the AutoNL space toward several targets
(MACs counted at 224x224, search at 32x32 on the built-in digits) and prints, for each, the
MACs of the derived network and how far off the target it is.

    python benchmarks/cost_landing.py [--targets 150M 250M 400M] [--steps 150] [--out runs/landing]

Each search is an ordinary `autonl search` run (the command is printed); its folder is kept.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import harness


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--targets", nargs="+", default=["150M", "250M", "400M"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup-steps", type=int, help="default: a fifth of --steps, as autonl run")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", default="runs/landing")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `autonl search` options")
    args = ap.parse_args()
    autonl = str(Path(sys.executable).parent / "autonl")
    rows = []
    for target in args.targets:
        out = Path(args.out) / target
        cmd = [autonl, "search", "--target-macs", target, "--cost-resolution", "224", "--data", args.data,
               "--resolution", "32", "--steps", str(args.steps),
               "--warmup-steps", str(args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 5)),
               "--batch-size", "32", "--train-size", "1024", "--out", str(out), *args.extra]
        print("$", " ".join(cmd[1:]).replace(autonl, "autonl"), flush=True)
        if (out / "result.json").exists():
            print("  (already done; reading its result)")
        else:
            watch = harness.Stopwatch()
            subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            print(f"  {watch.seconds:.0f} s")
        rows.append(json.loads((out / "result.json").read_text()))
    print(f"\n{'target':>8} {'derived':>10} {'off':>7} {'blocks':>6} {'LightNL':>7}")
    for r in rows:
        print(f"{r['target_macs'] / 1e6:>7.0f}M {r['derived_macs'] / 1e6:>9.1f}M {100 * r['off_target']:>+6.1f}% "
              f"{r['blocks']:>6} {r['lightnl_blocks']:>7}")
    worst = max(abs(r["off_target"]) for r in rows)
    print(f"largest miss: {100 * worst:.1f}% ({'within' if worst <= 0.05 else 'outside'} 5%)")


if __name__ == "__main__":
    main()
