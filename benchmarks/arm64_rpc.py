"""Tuning for an aarch64 board over TVM RPC, end to end, with qemu-user as the board.

The board runs the C++ ``autonl_rpc_server`` that every arm64 deploy folder carries
(cross-built against the aarch64 wheels' ``libtvm_runtime.so``; no Python on the board).
Here it runs under ``qemu-aarch64``. The benchmark, through the CLI as a user would:

1. ``autonl compile NET --target arm64`` untuned: the deploy folder, with the server;
2. starts that server under qemu-user on loopback;
3. ``autonl compile NET --target arm64 --tune-rpc 127.0.0.1:PORT --tune-trials N``: every
   candidate cross-linked here, uploaded to the server and timed there;
4. the same compile again with ``--tuning-dir`` of step 3: 0 new trials;
5. ``autonl deploy FOLDER --rpc`` for the untuned and the tuned folder: both run on the
   emulated board, checked against PyTorch's output, and timed there.

Emulated timings are the emulator's (an x86 core interpreting aarch64), not a board's: they
show that the path works and that tuning moves the time on the machine that measures, not
what a Raspberry Pi would take.

    python benchmarks/arm64_rpc.py [--net autonl-s] [-r 64] [--width 0.5] [--trials 4]
                                   [--out runs/arm64-rpc] [--runs 5]
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import harness

from autonl.backends.tvm.remote import qemu_rpc_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autonl(*args) -> float:
    """Run the CLI (its output shown); seconds it took."""
    watch = harness.Stopwatch()
    cmd = [sys.executable, "-m", "autonl.cli.main", *map(str, args)]
    print("$ autonl " + " ".join(map(str, args)), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        sys.exit(f"error: autonl {args[0]} failed (exit code {proc.returncode})")
    return watch.seconds


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--net", default="autonl-s")
    ap.add_argument("-r", "--resolution", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--trials", type=int, default=4, help="trials per task, on average")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="runs/arm64-rpc")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    net = [args.net, "-r", args.resolution, "-w", args.width, "--classes", args.classes, "--backend", "tvm",
           "--target", "arm64"]
    secs = {"untuned compile": autonl("compile", *net, "--out", out / "untuned")}
    with qemu_rpc_server(out / "untuned", free_port()) as addr:
        print(f"autonl_rpc_server (aarch64) under qemu-user at {addr}", flush=True)
        secs["tuning compile"] = autonl("compile", *net, "--tune-rpc", addr, "--tune-trials", args.trials,
                                        "--out", out / "tuned")
        secs["reusing compile"] = autonl("compile", *net, "--tuning-dir", out / "tuned" / "tuning",
                                         "--out", out / "reused")
        runs = {}
        for name in ("untuned", "tuned"):
            autonl("deploy", out / name, "--rpc", addr, "--runs", args.runs, "--json", out / f"{name}.json")
            runs[name] = json.loads((out / f"{name}.json").read_text())
    tuned = json.loads((out / "tuned" / "manifest.json").read_text())["tuning"]
    reused = json.loads((out / "reused" / "manifest.json").read_text())["tuning"]
    print()
    print(f"{args.net} at {args.resolution}, width {args.width}, arm64 (aarch64 under qemu-user, RPC on loopback)")
    print(f"  tuning: {tuned['tasks']} tasks, {tuned['trials_run']} trials timed on the server in "
          f"{tuned['seconds']:.0f} s ({tuned['measured_on']}); covers {tuned['tasks_covered']}")
    print(f"  second compile with the database: {reused['trials_run']} new trials, covers "
          f"{reused['tasks_covered']} of {reused['tasks']} tasks")
    for name, r in runs.items():
        print(f"  deploy --rpc {name:<8} median {r['median_ms']:9.2f} ms over {r['runs']} runs (emulated), "
              f"max |diff| vs PyTorch {r['vs_reference_max_abs_diff']:.1e}")
    print(f"  tuned/untuned on the emulated board: {runs['tuned']['median_ms'] / runs['untuned']['median_ms']:.2f}x")
    print("  wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()))


if __name__ == "__main__":
    main()
