"""Does loading, costing and printing an IR file scale with its node count? Writes graphs of
1k, 10k and 100k nodes (a chain of conv2d -> batch_norm -> relu -> add blocks with a residual
around each, in the text form and the JSON form) and a deeply nested input, then measures each
step in its own process: wall time and peak memory (ru_maxrss of that process).

    python benchmarks/ir_scaling.py [--sizes 1000 10000 100000] [--shape chain|inputs] [--depth 100000]

Steps: ``load`` (load_graph: parse, type inference, verification), ``cost`` (analyze_cost of
the loaded graph), ``print`` (print_graph with cost comments), ``show`` (the whole
``autonl show FILE --cost``) and ``opt`` (the whole ``autonl opt FILE -p lower-composites -o
OUT``; with ``--shape composites`` a fifth of the nodes are MBConvs to lower, each into
about ten primitives). A step's time is the step alone; its memory is the peak of its
process (load included). The goals: ``show --cost`` of 100k nodes in under 30 s and
2 GB (issue #22); ``opt -p lower-composites`` of 100k nodes in under 30 s, growing linearly
(issue #36: a splice at a time made it quadratic). The deep inputs (an attribute ``[[[...]]]`` and a JSON document nested --depth levels)
must give one ``error:`` line, not an internal error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

SHAPE = [1, 16, 8, 8]
GOAL_SECONDS, GOAL_MB = 30.0, 2048


# -- inputs ------------------------------------------------------------------------
def block_nodes(n: int):
    """(name, op, inputs, attrs) of ``n`` nodes: conv2d, batch_norm, relu, add(relu, block input)."""
    prev, k, out = "x", 0, []
    while len(out) < n:
        block = [(f"conv_{k}", "conv2d", [prev], {"out": SHAPE[1], "k": 3}),
                 (f"bn_{k}", "batch_norm", [f"conv_{k}"], {"eps": 0.001, "momentum": 0.01}),
                 (f"relu_{k}", "relu", [f"bn_{k}"], {}),
                 (f"add_{k}", "add", [f"relu_{k}", prev], {})]
        out.extend(block[:n - len(out)])
        prev, k = f"add_{k}", k + 1
    return out


def many_inputs_nodes(n: int):
    """``--shape inputs``: a chain of adds that reads a new graph input at each node (n inputs)."""
    return [("a0", "relu", ["i0"], {})] + [(f"a{j}", "add", [f"a{j - 1}", f"i{j}"], {}) for j in range(1, n)]


def composite_nodes(n: int):
    """``--shape composites``: the chain's blocks with an MBConv (a composite op) in each, for
    ``opt -p lower-composites``, which splices every composite into primitives."""
    prev, k, out = "x", 0, []
    while len(out) < n:
        block = [(f"conv_{k}", "conv2d", [prev], {"out": SHAPE[1], "k": 3}),
                 (f"bn_{k}", "batch_norm", [f"conv_{k}"], {"eps": 0.001, "momentum": 0.01}),
                 (f"relu_{k}", "relu", [f"bn_{k}"], {}),
                 (f"mbconv_{k}", "mbconv", [f"relu_{k}"], {"out": SHAPE[1], "e": 2, "k": 3}),
                 (f"add_{k}", "add", [f"mbconv_{k}", prev], {})]
        out.extend(block[:n - len(out)])
        prev, k = f"add_{k}", k + 1
    return out


def graph_nodes(n: int, shape: str):
    return {"inputs": many_inputs_nodes, "composites": composite_nodes}.get(shape, block_nodes)(n)


def graph_inputs(n: int, shape: str) -> list[str]:
    return [f"i{j}" for j in range(n)] if shape == "inputs" else ["x"]


def write_text(path: Path, n: int, shape: str = "chain") -> None:
    t = f"f32[{','.join(map(str, SHAPE))}]"
    with path.open("w") as f:
        params = ", ".join(f"%{v}: {t}" for v in graph_inputs(n, shape))
        f.write(f"graph chain({params}) -> {t} {{\n")
        for name, op, inputs, attrs in graph_nodes(n, shape):
            a = " {" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "}" if attrs else ""
            f.write(f"  %{name} : {t} = {op}({', '.join('%' + v for v in inputs)}){a}\n")
        f.write(f"  return %{name}\n}}\n")


def write_json(path: Path, n: int, shape: str = "chain") -> None:
    t = {"dtype": "f32", "shape": SHAPE}
    nodes = [{"name": name, "op": op, "inputs": inputs, "attrs": attrs, "type": t}
             for name, op, inputs, attrs in graph_nodes(n, shape)]
    doc = {"format": "autonl-ir", "version": 1, "name": "chain",
           "inputs": [{"name": v, "type": t} for v in graph_inputs(n, shape)],
           "nodes": nodes, "outputs": [nodes[-1]["name"]]}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def write_deep(folder: Path, depth: int) -> list[Path]:
    text = folder / f"deep_{depth}.ir"
    value = "[" * depth + "1" + "]" * depth
    text.write_text(f"graph deep(%x: f32[1,4]) -> f32[1,4] {{\n  %y = relu(%x) {{a={value}}}\n"
                    "  return %y\n}\n")
    js = folder / f"deep_{depth}.json"
    js.write_text('{"format": "autonl-ir", "version": 1, "name": "deep", "inputs": [{"name": "x", "type": '
                  '{"dtype": "f32", "shape": [1, 4]}}], "nodes": [{"name": "y", "op": "relu", "inputs": ["x"], '
                  f'"attrs": {{"a": {value}}}}}], "outputs": ["y"]}}\n')
    return [text, js]


# -- one step in its own process -------------------------------------------------------
# A child's ru_maxrss starts at what its parent held when it forked (Linux carries the high-water
# mark across exec), so the parent stays small: it writes no big input itself.
def write(form: str, n: str, path: str, shape: str) -> None:
    (write_json if form == "json" else write_text)(Path(path), int(n), shape)


def child(step: str, path: str) -> None:
    """Run ``step`` on ``path`` and print {"seconds": ...} (the parent reads the memory)."""
    from autonl.ir import load_graph, print_graph
    from autonl.passes import analyze_cost

    watch = harness.Stopwatch()
    graph = load_graph(path)
    loaded = watch.seconds
    watch = harness.Stopwatch()
    if step == "cost":
        analyze_cost(graph)
    elif step == "print":
        print_graph(graph)
    print(json.dumps({"seconds": loaded if step == "load" else watch.seconds}))


def measure(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd``; its wall time, peak memory (MB), exit status and stdout/first stderr line."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        watch = harness.Stopwatch()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if watch.seconds > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = watch.seconds
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace").strip().splitlines()
    # ru_maxrss is in KiB on Linux
    return {"wall": wall, "mb": usage.ru_maxrss / 1024, "rc": proc.returncode,
            "timed_out": wall > timeout, "stdout": stdout, "stderr": stderr[-1] if stderr else ""}


def run_step(step: str, path: Path, timeout: float) -> dict:
    autonl = str(Path(sys.executable).parent / "autonl")
    if step in ("show", "opt"):
        cmd = ([autonl, "show", str(path), "--cost"] if step == "show" else
               [autonl, "opt", str(path), "-p", "lower-composites", "-o", str(path.with_suffix(".lowered.ir"))])
        r = measure(cmd, timeout)
        r["seconds"] = r["wall"]
        return r
    r = measure([sys.executable, __file__, "--child", step, str(path)], timeout)
    if r["rc"] == 0:
        r["seconds"] = json.loads(r["stdout"].strip().splitlines()[-1])["seconds"]
    return r


def cell(r: dict) -> str:
    if r.get("timed_out"):
        return f"{'timeout':>8} {r['mb']:>7.0f}"
    if r["rc"] != 0:
        return f"{'rc=' + str(r['rc']):>8} {r['mb']:>7.0f}"
    return f"{r['seconds']:>7.2f}s {r['mb']:>6.0f}M"


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000])
    ap.add_argument("--forms", nargs="+", choices=["text", "json"], default=["text", "json"])
    ap.add_argument("--steps", nargs="+", choices=["load", "cost", "print", "show", "opt"],
                    default=["load", "cost", "print", "show", "opt"])
    ap.add_argument("--depth", type=int, default=100000, help="nesting depth of the deep inputs")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per step")
    ap.add_argument("--keep", metavar="DIR", help="write the inputs here and keep them")
    ap.add_argument("--child", nargs=2, metavar=("STEP", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--shape", choices=["chain", "inputs", "composites"], default="chain",
                    help="chain: conv/bn/relu/add blocks with residuals; inputs: a chain of adds reading a "
                         "new graph input at each node (the shape networkx's find_cycle was quadratic on); "
                         "composites: the chain with an MBConv in every block (what opt lowers)")
    ap.add_argument("--write", nargs=4, metavar=("FORM", "N", "FILE", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.write:
        write(*args.write)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        head = "  ".join(f"{s + ' (time, peak)':>17}" for s in args.steps)
        print(f"{'form':<5} {'nodes':>7} {'MB in':>6}  {head}", flush=True)
        results = {}
        for form in args.forms:
            for n in args.sizes:
                path = folder / f"chain_{n}.{'json' if form == 'json' else 'ir'}"
                subprocess.run([sys.executable, __file__, "--write", form, str(n), str(path), args.shape],
                               check=True)
                row = {s: run_step(s, path, args.timeout) for s in args.steps}
                results[(form, n)] = row
                size = path.stat().st_size / 1e6
                print(f"{form:<5} {n:>7} {size:>6.1f}  " + "  ".join(f"{cell(row[s]):>17}" for s in args.steps),
                      flush=True)
                for s, r in row.items():
                    if r["rc"] != 0 and not r.get("timed_out"):
                        print(f"      {s}: {r['stderr']}")

        print(f"\ndeep inputs (nested {args.depth} levels), autonl show FILE --cost:")
        for path in write_deep(folder, args.depth):
            r = run_step("show", path, args.timeout)
            ok = r["rc"] == 1 and r["stderr"].startswith("error: ") and "internal error" not in r["stderr"]
            print(f"  {path.suffix:<6} {r['seconds']:>6.2f}s {r['mb']:>6.0f}M rc={r['rc']} "
                  f"{'ok' if ok else 'NOT OK'}: {r['stderr'][:150]}")

        show = results.get(("text", 100000), {}).get("show")
        if show is not None and args.shape == "chain":
            met = show["rc"] == 0 and show["seconds"] < GOAL_SECONDS and show["mb"] < GOAL_MB
            print(f"\ngoal (text, 100k nodes, show --cost under {GOAL_SECONDS:.0f} s and {GOAL_MB} MB): "
                  f"{'met' if met else 'NOT met'} ({show['seconds']:.1f} s, {show['mb']:.0f} MB)")


if __name__ == "__main__":
    main()
