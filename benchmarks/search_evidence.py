"""Does the search choose better networks than chance? Searched networks against random and
hand-placed ones from the same space at the same cost, trained with one recipe and several
seeds, on any dataset autonl reads (a built-in name or an ImageFolder root).

    python benchmarks/search_evidence.py --data fashion-mnist

One command, resumable (run it again after an interruption: finished searches, trainings and
rankings are reused; an interrupted search resumes from its checkpoint, an interrupted
training starts over). Working files go to ``--work`` (default ``runs/evidence-NAME``), the
figures to ``--results`` (default ``benchmarks/results/search_evidence_NAME.{json,txt,png}``).

What it does, in this order:

1. The space: a small MobileNetV2-like macro (stem 16; blocks 16 / 2x24 / 2x32 / 2x48 with
   strides 1, 1, 2, 2; head 128) at ``--resolution`` through the ``search-space`` pipeline
   (kernel 3/5, expansion 3/6, skip, a LightNL candidate after every block with ratio 1/8 or
   1/4 and stride 1 or 2).
2. For the latency comparison, an onnxruntime latency table of that space (``autonl
   latency-table --backend onnx --threads 1``), measured on this machine.
3. The plan (``plan.json``), drawn *before any search runs* and kept for every later run: for
   each comparison (``macs``: counted MACs; ``latency``: the table's predicted milliseconds),
   a target ``--target`` of the way from the space's smallest to its largest network, and
   ``--random`` networks sampled uniformly from the space and kept if within +-5% of it; the
   network without LightNL closest to the target; and (MACs) hand-placed LightNL after every
   block of the early, middle or late stage (kernels and expansions sampled until within
   +-5%).
4. One ``autonl search`` per ``--search-seeds`` seed and comparison, with the recipe of
   ``autonl search`` (its defaults, changed with ``--set KEY=VALUE``). The search never reads
   the validation split: it holds out ``--holdout`` training images as its own validation
   (the supernet's accuracy it reports is measured on them).
5. Every network (searched ones derived from their search) trained from scratch ``--train-steps``
   steps with each of ``--seeds`` (autonl train's recipe: SGD Nesterov lr 0.1, batch 64,
   cosine, label smoothing 0.1) and evaluated on the whole validation split.
6. The supernet's ranking: each search's supernet with its final weights, forced to each
   non-searched network of its comparison, batch-norm statistics re-estimated on 20 training
   batches, evaluated on ``--rank-val-size`` validation images; Kendall tau against the
   networks' accuracies trained alone.

Reported per comparison: each arm's mean and sd; the searched mean's percentile among the
random networks' means (``searched_percentile``); a bootstrap 90% interval on (searched mean -
random median), resampling the searched runs and the random networks' means; whether the
searched mean lies above the random 75th percentile and above the no-LightNL network;
``kendall_tau`` (mean over searches, and each); the supernet's accuracy during each search
(training batches of the sampled path; held-out images at the end); which decisions the
searches agree on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

BLOCKS = ("ir_r1_k3_s1_e1_c16", "ir_r2_k3_s1_e3_c24", "ir_r2_k3_s2_e3_c32", "ir_r2_k3_s2_e3_c48")
TOL = 0.05
PLAN_VERSION = 1
# settings the plan depends on: a run with others needs another --work folder
PLAN_KEYS = ("data", "resolution", "target", "random", "sample_seed", "costs")


# -- the space -----------------------------------------------------------------------------
def build_space(resolution: int, classes: int):
    from autonl.ir import Model
    from autonl.ir.presets import NetworkSpec, build_network
    from autonl.passes import PassManager

    spec = NetworkSpec("evidence", BLOCKS, act="silu", stem=16, head=128, dropout=0.0, bn_eps=1e-3,
                       bn_momentum=0.01)
    return PassManager("search-space").run(Model(build_network(spec, resolution=resolution,
                                                               num_classes=classes), {})).graph


def derive(space, decisions):
    from autonl.passes.derive import Derive
    return Derive(decisions)(space).graph


class Cost:
    """A comparison's cost of a network: counted MACs, or the latency table's prediction (ms)."""

    def __init__(self, kind: str, space, table_path: Path | None = None):
        self.kind, self.space = kind, space
        if kind == "latency":
            from autonl.backends.latency import LatencyTable
            self.table = LatencyTable.read(table_path)
            self.table.check_fits(space)

    def __call__(self, decisions) -> float:
        if self.kind == "latency":
            return self.table.predict(self.space, decisions)
        from autonl.passes import analyze_cost
        return float(analyze_cost(derive(self.space, decisions)).macs)

    def bounds(self) -> tuple[float, float]:
        if self.kind == "latency":
            return self.table.bounds(self.space)
        from autonl.passes import analyze_cost
        report = analyze_cost(self.space)
        return float(report.macs), float(report.total("macs_max"))

    def fmt(self, v: float) -> str:
        return f"{v:.3f} ms" if self.kind == "latency" else f"{v / 1e6:.2f}M MACs"


def stages(space) -> dict[str, list[str]]:
    """The LightNL candidates grouped by the size of their feature map, largest first: up to
    three groups, named early / middle / late."""
    by_size: dict[int, list[str]] = {}
    for n in space:
        if n.op == "lightnl":
            by_size.setdefault(space.type_of(n.inputs[0]).shape[-1], []).append(n.name)
    sizes = sorted(by_size, reverse=True)
    names = ["early", "middle", "late"] if len(sizes) >= 3 else ["early", "late"][:len(sizes)]
    groups = [sizes[round(i * len(sizes) / len(names)):round((i + 1) * len(sizes) / len(names))]
              for i in range(len(names))]
    return {f"{name} ({'/'.join(f'{s}x{s}' for s in g)})": [x for s in g for x in by_size[s]]
            for name, g in zip(names, groups)}


def positions(decisions) -> str:
    """The inserted LightNL blocks, e.g. ``1(.25,s1) 5(.125,s2)``, or ``none``."""
    out = [f"{name.split('_')[1]}({d['r']:g},s{d['s']})".replace("0.", ".")
           for name, d in sorted(decisions.items()) if name.startswith("lightnl_") and d.get("insert")]
    return " ".join(out) or "none"


def sample(space, cost: Cost, target: float, rng: random.Random, fix=None, tries: int = 20000) -> dict | None:
    """Random decisions (with ``fix(decisions)`` applied) within +-TOL of ``target``."""
    from autonl.passes import SearchSpace

    s = SearchSpace(space)
    for _ in range(tries):
        d = s.random(rng)
        if fix is not None:
            fix(d)
        if abs(cost(d) / target - 1) <= TOL:
            return d
    return None


def only_at(names, r=0.25, s=1):
    def fix(d):
        for name, dd in d.items():
            if name.startswith("lightnl_"):
                dd["insert"] = name in names
                if name in names:
                    dd["r"], dd["s"] = r, s
    return fix


# -- jobs (each runs in a worker process with one thread) ----------------------------------
def _threads(n: int) -> None:
    import torch
    torch.set_num_threads(n)


def train_job(job: dict) -> dict:
    """One training: the derived graph, trained from scratch, evaluated on the validation split."""
    _threads(job["threads"])
    from autonl.backends.torch.config import TrainConfig
    from autonl.backends.torch.train import train
    from autonl.ir import parse_graph

    out = Path(job["out"])
    done = out / "evidence.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = TrainConfig(data=job["data"], steps=job["steps"], batch_size=64, seed=job["seed"], workers=0,
                      eval_every=job["steps"], log_every=max(1, job["steps"] // 10), checkpoint_every=job["steps"],
                      train_size=job["train_size"], **job.get("aug", {}))
    t0 = time.perf_counter()
    shutil.rmtree(out / "run", ignore_errors=True)    # an interrupted training starts over
    result = train(parse_graph(job["graph"]), cfg, out / "run", progress=False)
    row = {"kind": "train", "net": job["net"], "seed": job["seed"], "val_acc": result["val_acc"],
           "seconds": time.perf_counter() - t0}
    _write(done, row)
    (out / "run" / "checkpoint.pt").unlink(missing_ok=True)     # the weights are not needed again
    return row


def search_job(job: dict) -> dict:
    """One search (resumed from its checkpoint when one was interrupted)."""
    _threads(job["threads"])
    from autonl.backends.torch.config import SearchConfig
    from autonl.backends.torch.search import search
    from autonl.ir import parse_graph

    out = Path(job["out"])
    done = out / "evidence_search.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    if (out / "checkpoint.pt").exists():
        result = search(None, None, out, resume=True, progress=False)
    else:
        shutil.rmtree(out, ignore_errors=True)
        result = search(parse_graph(job["space"]), SearchConfig(**job["config"]), out, progress=False)
    row = {"kind": "search", "net": job["net"], "seconds": time.perf_counter() - t0, "result": result,
           "decisions": json.loads((out / "decisions.json").read_text())}
    _write(done, row)
    return row


def rank_job(job: dict) -> dict:
    """The supernet of one search, forced to each network of ``job['nets']`` in turn (batch-norm
    statistics re-estimated on training batches), evaluated on validation images."""
    _threads(job["threads"])
    import torch
    from autonl.backends.torch.checkpoint import read_checkpoint
    from autonl.backends.torch.config import SearchConfig
    from autonl.backends.torch.data import make_loaders
    from autonl.backends.torch.evaluation import evaluate, recalibrate_bn
    from autonl.backends.torch.search import cost_resolution, latency_table
    from autonl.backends.torch.supernet import Supernet
    from autonl.ir import load_graph
    from autonl.passes import resize_graph

    out = Path(job["out"])
    if out.exists():
        return json.loads(out.read_text())
    folder = Path(job["search"])
    ckpt = read_checkpoint(folder / "checkpoint.pt")
    cfg = SearchConfig.from_dict(ckpt["config"])
    graph = load_graph(folder / "search_graph.json")
    table = latency_table(cfg)
    res = cost_resolution(cfg, table)
    supernet = Supernet(graph, tau=cfg.tau, cost_graph=resize_graph(graph, res) if res else None, latency=table)
    supernet.load_state_dict(ckpt["model"])
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    train_loader, val_loader, _ = make_loaders(job["data"], resolution, 64, workers=0, seed=0,
                                               train_size=job["train_size"], val_size=job["val_size"],
                                               **job.get("aug", {}))
    device = torch.device("cpu")
    accs = {}
    for net, decisions in job["nets"].items():
        supernet.force(decisions)
        recalibrate_bn(supernet, train_loader, device, batches=20)
        accs[net] = evaluate(supernet, val_loader, device)["val_acc"]
    row = {"kind": "rank", "net": job["net"], "supernet_acc": accs}
    _write(out, row)
    return row


def _write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


JOBS = {"train": train_job, "search": search_job, "rank": rank_job}


def run_job(job: dict) -> dict:
    return JOBS[job["kind"]](job)


# -- the plan ------------------------------------------------------------------------------
def make_plan(args, space, work: Path, classes: int) -> dict:
    """The comparisons' targets and their non-searched networks, drawn now (before any search)
    and kept in plan.json; a later run with other plan settings is refused."""
    path = work / "plan.json"
    settings = {k: getattr(args, k) for k in PLAN_KEYS}
    if path.exists():
        plan = json.loads(path.read_text())
        if plan["settings"] != settings:
            sys.exit(f"error: {path} was drawn with {plan['settings']}, not {settings}; "
                     f"give another --work folder (or delete it)")
        return plan
    plan = {"version": PLAN_VERSION, "settings": settings, "classes": classes, "drawn_at": time.time(),
            "comparisons": {}}
    rng = random.Random(args.sample_seed)
    for kind in args.costs:
        cost = Cost(kind, space, work / "latency_table.json")
        lo, hi = cost.bounds()
        target = lo + args.target * (hi - lo)
        nets: dict[str, dict] = {}
        for i in range(args.random):
            d = sample(space, cost, target, rng)
            if d is None:
                sys.exit(f"error: no random network within +-5% of the {kind} target {cost.fmt(target)}; "
                         f"choose another --target")
            nets[f"random-{i}"] = {"arm": "random", "decisions": d}
        no_nl = [d for d in (sample(space, cost, target, rng, only_at(())) for _ in range(40)) if d]
        if no_nl:
            nets["no-lightnl"] = {"arm": "no LightNL", "decisions": min(no_nl, key=lambda d: abs(cost(d) - target))}
        if kind == "macs":
            for stage, names in stages(space).items():
                d = sample(space, cost, target, rng, only_at(names))
                if d is not None:
                    nets[f"hand-{stage.split()[0]}"] = {"arm": f"hand: {stage}", "decisions": d}
        for n in nets.values():
            n["cost"] = cost(n["decisions"])
        plan["comparisons"][kind] = {"target": target, "lo": lo, "hi": hi, "networks": nets}
        print(f"{kind}: space {cost.fmt(lo)}..{cost.fmt(hi)}, target {cost.fmt(target)} (+-{TOL:.0%}); "
              f"{len(nets)} networks drawn", flush=True)
    _write(path, plan)
    return plan


def parse_sets(sets: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs for SearchConfig (VALUE read as JSON, else as a string)."""
    from dataclasses import fields

    from autonl.backends.torch.config import SearchConfig

    known = {f.name for f in fields(SearchConfig)}
    out = {}
    for s in sets:
        key, sep, value = s.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            sys.exit(f"error: --set takes KEY=VALUE with KEY a search setting ({', '.join(sorted(known))}), got {s!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def recipe_tag(sets: dict) -> str:
    return "default" if not sets else "_".join(f"{k}={v}" for k, v in sorted(sets.items())).replace("/", "-")


# changes to the search's code that change what it computes: a new revision searches anew
# (2: the landing within 5% of the target, backends/torch/search.py:land)
SEARCH_REVISION = 2
RUN_ONLY = ("target_macs", "target_latency_ms", "latency_table", "seed", "workers", "device", "log_every",
            "checkpoint_every", "channels_last", "compile")


def recipe_key(config: dict) -> str:
    """A short name for everything a search computes with except its target and seed (the
    search's defaults included, so that a changed default searches anew)."""
    import hashlib
    from dataclasses import asdict

    from autonl.backends.torch.config import SearchConfig

    full = {k: v for k, v in asdict(SearchConfig(**config)).items() if k not in RUN_ONLY}
    full["revision"] = SEARCH_REVISION
    return hashlib.sha1(json.dumps(full, sort_keys=True).encode()).hexdigest()[:8]


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist", help="a built-in dataset or an ImageFolder root")
    ap.add_argument("--work", help="working folder (resumable) [default: runs/evidence-NAME]")
    ap.add_argument("--results", help="figures: PREFIX.json/.txt/.png [default: benchmarks/results/search_evidence_NAME]")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--train-size", type=int, help="training images used (a fixed subset) [default: all]")
    ap.add_argument("--costs", nargs="+", default=["macs", "latency"], choices=["macs", "latency"])
    ap.add_argument("--target", type=float, default=0.45,
                    help="target as a fraction of the way from the smallest to the largest network")
    ap.add_argument("--random", type=int, default=20, help="random networks within +-5%% of each target")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of every network")
    ap.add_argument("--search-steps", type=int, default=400)
    ap.add_argument("--warmup-steps", type=int, help="the search's warm-up [default: a third of its steps]")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--holdout", type=int, default=2000, help="training images a search holds out as its validation")
    ap.add_argument("--rank-val-size", type=int, default=2000, help="validation images the supernet ranking reads")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a search setting other than autonl search's default (e.g. arch_lr=0.1); repeatable")
    ap.add_argument("--crop-scale", type=float, help="augmentation of searches and trainings (autonl's "
                    "--crop-scale) [default: the data's]")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips [default: the data's]")
    ap.add_argument("--eval-crop", type=float, help="evaluation centre crop [default: the data's]")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (one thread each)")
    args = ap.parse_args()
    args.aug = {k: v for k, v in (("crop_scale", args.crop_scale), ("flip", args.flip), ("eval_crop", args.eval_crop))
                if v is not None}
    print("$ python " + shlex.join(sys.argv), flush=True)
    t_start = time.perf_counter()

    from autonl.backends.torch.data import describe, make_loaders, num_classes
    from autonl.ir import AutonlError, render

    try:
        classes = num_classes(args.data)
        make_loaders(args.data, args.resolution, 64, workers=0, train_size=1, val_size=1, **args.aug)   # files there
    except AutonlError as e:
        sys.exit(f"error: {e}")
    name = Path(args.data).name if os.sep in args.data or Path(args.data).exists() else args.data
    work = Path(args.work or f"runs/evidence-{name}")
    tag = recipe_tag(parse_sets(args.sets))
    prefix = Path(args.results or f"benchmarks/results/search_evidence_{name}" + ("" if tag == "default" else f"_{tag}"))
    work.mkdir(parents=True, exist_ok=True)
    space = build_space(args.resolution, classes)
    space_text = render(space, "text")
    (work / "space.ir").write_text(space_text)
    if "latency" in args.costs and not (work / "latency_table.json").exists():
        print("measuring the latency table (onnxruntime, 1 thread)...", flush=True)
        tmp = work / "latency_table.tmp.json"
        tmp.unlink(missing_ok=True)
        proc = subprocess.run([shutil.which("autonl") or "autonl", "latency-table", str(work / "space.ir"),
                               "--backend", "onnx", "--threads", "1", "--out", str(tmp)], text=True)
        if proc.returncode != 0:
            sys.exit("error: autonl latency-table failed")
        os.replace(tmp, work / "latency_table.json")
    plan = make_plan(args, space, work, classes)
    sets = parse_sets(args.sets)
    tag = recipe_tag(sets)

    # every job, in the order they may start: searches and the non-searched trainings first
    jobs: list[dict] = []
    for kind in args.costs:
        comp = plan["comparisons"][kind]
        for seed in args.search_seeds:
            config = {"data": args.data, "steps": args.search_steps, "seed": seed, "workers": 0, "log_every": 10,
                      "checkpoint_every": 50, "train_size": args.train_size, "holdout": args.holdout,
                      "warmup_steps": args.warmup_steps if args.warmup_steps is not None else args.search_steps // 3,
                      **({"target_macs": comp["target"]} if kind == "macs" else
                         {"target_latency_ms": comp["target"], "latency_table": str(work / "latency_table.json")}),
                      **args.aug, **sets}
            key = recipe_key(config)
            jobs.append({"kind": "search", "net": f"{kind}/searched-{seed}", "cost": kind, "seed": seed,
                         "space": space_text, "config": config, "threads": 1,
                         "out": str(work / "search" / f"{tag}-{key}" / f"{kind}-{seed}")})
    folders = {j["net"]: Path(j["out"]) for j in jobs}
    for kind in args.costs:
        for net, n in plan["comparisons"][kind]["networks"].items():
            for seed in args.seeds:
                jobs.append(train_job_of(args, space, f"{kind}/{net}", n["decisions"], seed, work / "train"))
    rows: dict[str, dict] = {}
    searched: dict[str, dict] = {}
    total, finished = len(jobs) + len(args.costs) * len(args.search_seeds) * (len(args.seeds) + 1), 0
    print(f"{total} jobs ({len(args.costs) * len(args.search_seeds)} searches, their trainings and rankings, "
          f"{len(jobs) - len(args.costs) * len(args.search_seeds)} other trainings), {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        pending = {pool.submit(run_job, j): j for j in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                row = fut.result()
                finished += 1
                elapsed = (time.perf_counter() - t_start) / 60
                if job["kind"] == "search":
                    kind = job["cost"]
                    searched[job["net"]] = row
                    d = row["decisions"]
                    cost = Cost(kind, space, work / "latency_table.json")
                    print(f"[{finished}/{total} {elapsed:.0f} min] search {job['net']} ({tag}): {cost.fmt(cost(d))}, "
                          f"supernet held-out acc {row['result']['supernet_val_acc']:.3f}, LightNL {positions(d)} "
                          f"({row['seconds']:.0f} s)", flush=True)
                    for seed in args.seeds:
                        j = train_job_of(args, space, f"{job['net']}@{Path(job['out']).parent.name}", d, seed,
                                         work / "train")
                        pending[pool.submit(run_job, j)] = j
                    others = {net: n["decisions"] for net, n in plan["comparisons"][kind]["networks"].items()}
                    j = {"kind": "rank", "net": job["net"], "search": job["out"], "nets": others, "threads": 1,
                         "data": args.data, "train_size": args.train_size, "val_size": args.rank_val_size,
                         "aug": args.aug, "out": str(Path(job["out"]) / "ranking.json")}
                    pending[pool.submit(run_job, j)] = j
                else:
                    rows[f"{job['kind']}:{job['net']}:{job.get('seed', '')}"] = row
                    what = (f"val acc {row['val_acc']:.4f}" if job["kind"] == "train"
                            else f"supernet ranking of {len(row['supernet_acc'])} networks")
                    print(f"[{finished}/{total} {elapsed:.0f} min] {job['kind']} {job['net']}"
                          f"{' seed ' + str(job['seed']) if job['kind'] == 'train' else ''}: {what}", flush=True)
    results = summarize(args, plan, space, work, rows, searched, tag, folders, time.perf_counter() - t_start)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    # the prefix may hold a dot (a recipe tag such as warmup_drop=0.5): add, never replace, a suffix
    _write(Path(f"{prefix}.json"), results)
    Path(f"{prefix}.txt").write_text(results["table"] + "\n")
    plot(results, Path(f"{prefix}.png"))
    print("\n" + results["table"])
    print(f"\nwrote {prefix}.json, .txt, .png", flush=True)


def train_job_of(args, space, net: str, decisions: dict, seed: int, root: Path) -> dict:
    from autonl.ir import render
    aug = "".join(f"-{k}{v}" for k, v in sorted(args.aug.items()))       # non-default augmentation
    return {"kind": "train", "net": net, "seed": seed, "data": args.data, "steps": args.train_steps,
            "train_size": args.train_size, "threads": 1, "graph": render(derive(space, decisions), "text"),
            "aug": args.aug, "out": str(root / f"{net.replace('/', '_').replace('@', '_')}-t{args.train_steps}{aug}-s{seed}")}


# -- the figures ---------------------------------------------------------------------------
def percentile_of(value: float, population: list[float]) -> float:
    """The share of ``population`` below ``value`` (ties count half), 0..100."""
    below = sum(p < value for p in population) + 0.5 * sum(p == value for p in population)
    return 100.0 * below / len(population)


def bootstrap_interval(searched: list[float], random_means: list[float]) -> list[float]:
    """A 90% percentile-bootstrap interval on mean(searched) - median(random)."""
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(searched), np.asarray(random_means)),
                    lambda s, r, axis=-1: np.mean(s, axis=axis) - np.median(r, axis=axis),
                    confidence_level=0.9, n_resamples=10000, method="percentile", vectorized=True,
                    rng=np.random.default_rng(0))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def agreement(decisions: list[dict]) -> dict:
    """Which decisions every search made alike, and the share of them."""
    keys = sorted({(n, a) for d in decisions for n in d for a in d[n]})
    same, differ = [], []
    for n, a in keys:
        values = [d.get(n, {}).get(a) for d in decisions]
        (same if all(v == values[0] for v in values) else differ).append(
            f"{n}.{a}={values[0]}" if all(v == values[0] for v in values) else f"{n}.{a}: {values}")
    return {"searches": len(decisions), "decisions": len(keys), "unanimous": len(same),
            "unanimous_share": len(same) / max(1, len(keys)), "same": same, "differ": differ}


def search_curve(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [{"step": r["step"], "train_acc": r.get("train_acc"), "warmup": r.get("warmup")} for r in rows
            if "train_acc" in r]


def summarize(args, plan, space, work: Path, rows: dict, searched: dict, tag: str, folders: dict,
              wall: float) -> dict:
    from scipy.stats import kendalltau

    from autonl.backends.torch.data import chance_level, describe

    def accs_of(net):
        return [r["val_acc"] for k, r in rows.items() if k.startswith(f"train:{net}:")]

    out = {"dataset": args.data, "dataset_description": describe(args.data), "resolution": args.resolution,
           "train_size": args.train_size, "chance": chance_level(args.data)[0], "recipe": tag,
           "search_settings": parse_sets(args.sets), "augmentation": args.aug or "the data's defaults",
           "search_steps": args.search_steps,
           "warmup_steps": args.warmup_steps if args.warmup_steps is not None else args.search_steps // 3,
           "train_steps": args.train_steps, "seeds": args.seeds, "search_seeds": args.search_seeds,
           "holdout": args.holdout, "cpu": cpu_name(), "wall_minutes": wall / 60,
           "command": "python " + shlex.join(sys.argv), "comparisons": {}}
    lines = [f"{describe(args.data)}; {args.resolution}x{args.resolution}; training {args.train_steps} steps x batch 64, "
             f"seeds {args.seeds}; searches {args.search_steps} steps, seeds {args.search_seeds}, recipe {tag}; "
             f"{cpu_name()}"]
    for kind in args.costs:
        comp = plan["comparisons"][kind]
        cost = Cost(kind, space, work / "latency_table.json")
        nets = {net: {**n, "val_acc": accs_of(f"{kind}/{net}")} for net, n in comp["networks"].items()}
        s_nets = {}
        for seed in args.search_seeds:
            row = searched[f"{kind}/searched-{seed}"]
            folder = folders[f"{kind}/searched-{seed}"]
            s_nets[f"searched-{seed}"] = {"arm": "searched", "decisions": row["decisions"],
                                          "cost": cost(row["decisions"]),
                                          "val_acc": accs_of(f"{kind}/searched-{seed}@{folder.parent.name}"),
                                          "supernet_heldout_acc": row["result"]["supernet_val_acc"],
                                          "search_seconds": row["seconds"], "curve": search_curve(folder),
                                          "off_target": cost(row["decisions"]) / comp["target"] - 1}
        random_means = [statistics.mean(n["val_acc"]) for n in nets.values() if n["arm"] == "random"]
        s_runs = [a for n in s_nets.values() for a in n["val_acc"]]
        s_mean = statistics.mean(s_runs)
        taus = {}
        for seed in args.search_seeds:
            ranking = json.loads((folders[f"{kind}/searched-{seed}"] / "ranking.json").read_text())
            ids = sorted(ranking["supernet_acc"])
            tau, p = kendalltau([ranking["supernet_acc"][i] for i in ids],
                                [statistics.mean(nets[i]["val_acc"]) for i in ids])
            taus[f"searched-{seed}"] = {"tau": float(tau), "p": float(p), "networks": len(ids),
                                        "supernet_acc": ranking["supernet_acc"]}
        p75 = float(__import__("numpy").percentile(random_means, 75))
        no_nl = statistics.mean(nets["no-lightnl"]["val_acc"]) if "no-lightnl" in nets else None
        c = {"target": comp["target"], "unit": "ms" if kind == "latency" else "MACs", "space": [comp["lo"], comp["hi"]],
             "searched_mean": s_mean, "searched_sd": statistics.stdev(s_runs) if len(s_runs) > 1 else 0.0,
             "random_median": statistics.median(random_means), "random_p75": p75,
             "searched_percentile": percentile_of(s_mean, random_means),
             "above_random_p75": s_mean > p75, "no_lightnl_mean": no_nl,
             "above_no_lightnl": None if no_nl is None else s_mean > no_nl,
             "bootstrap_90": bootstrap_interval(s_runs, random_means),
             "kendall_tau": statistics.mean(t["tau"] for t in taus.values()), "kendall_tau_each": taus,
             "agreement": agreement([n["decisions"] for n in s_nets.values()]),
             "networks": {**nets, **s_nets}}
        c["bootstrap_excludes_0"] = c["bootstrap_90"][0] > 0 or c["bootstrap_90"][1] < 0
        out["comparisons"][kind] = c
        lines += ["", f"== equal {'predicted latency (onnxruntime table, 1 thread)' if kind == 'latency' else 'MACs'}: "
                      f"target {cost.fmt(comp['target'])} +-{TOL:.0%} (space {cost.fmt(comp['lo'])}..{cost.fmt(comp['hi'])})",
                  f"{'network':<22} {'arm':<26} {'cost':>12} {'acc mean':>9} {'sd':>6}  LightNL (block(r,s))"]
        for net, n in sorted({**nets, **s_nets}.items(), key=lambda kv: -statistics.mean(kv[1]["val_acc"] or [0])):
            v = n["val_acc"]
            lines.append(f"{net:<22} {n['arm']:<26} {cost.fmt(n['cost']):>12} "
                         f"{statistics.mean(v) if v else float('nan'):>9.4f} "
                         f"{statistics.stdev(v) if len(v) > 1 else 0:>6.4f}  {positions(n['decisions'])}")
        lo, hi = c["bootstrap_90"]
        off = {k: n["off_target"] for k, n in s_nets.items() if abs(n["off_target"]) > TOL}
        c["searched_off_target"] = off
        if off:
            lines.append("warning: searched networks off the target by more than 5%, so not at equal cost: "
                         + ", ".join(f"{k} {v:+.1%}" for k, v in off.items()))
        lines += [f"searched mean {s_mean:.4f} (sd {c['searched_sd']:.4f}, {len(s_runs)} runs): percentile "
                  f"{c['searched_percentile']:.0f} of {len(random_means)} random networks (median {c['random_median']:.4f}, "
                  f"75th {p75:.4f}); " + (f"no LightNL {no_nl:.4f}; " if no_nl is not None else "") +
                  f"searched - random median {s_mean - c['random_median']:+.4f}, bootstrap 90% [{lo:+.4f}, {hi:+.4f}]",
                  f"bar: above the 75th percentile {'yes' if c['above_random_p75'] else 'NO'}; above no LightNL "
                  f"{'yes' if c['above_no_lightnl'] else 'NO'}; interval excludes 0 "
                  f"{'yes' if c['bootstrap_excludes_0'] and lo > 0 else 'NO'}",
                  f"supernet ranking: Kendall tau {c['kendall_tau']:+.3f} (each search: "
                  + ", ".join(f"{t['tau']:+.3f} p={t['p']:.2g}" for t in taus.values())
                  + f"; {len(next(iter(taus.values()))['supernet_acc'])} networks)",
                  "supernet during the search (sampled path, training batches; end of warm-up -> end; held-out "
                  "images at the end): " + "; ".join(
                      f"{k}: {_at_warm_end(n['curve'])} -> {_last(n['curve'])}, held-out {n['supernet_heldout_acc']:.3f}"
                      for k, n in s_nets.items()),
                  f"search agreement: {c['agreement']['unanimous']} of {c['agreement']['decisions']} decisions the same "
                  f"in all {len(s_nets)} searches; they differ on: {', '.join(c['agreement']['differ']) or 'nothing'}"]
    lines.append(f"\nwall time of this invocation {wall / 60:.1f} min (finished work is reused)")
    out["table"] = "\n".join(lines)
    return out


def _at_warm_end(curve):
    warm = [r for r in curve if r["warmup"]]
    return f"{warm[-1]['train_acc']:.3f}" if warm else "-"


def _last(curve):
    return f"{curve[-1]['train_acc']:.3f}" if curve else "-"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = results["comparisons"]
    fig, axes = plt.subplots(1, len(comps), figsize=(6.5 * len(comps), 4.8), squeeze=False)
    colours = {"random": "tab:gray", "no LightNL": "tab:blue", "searched": "tab:red"}
    for ax, (kind, c) in zip(axes[0], comps.items()):
        seen = set()
        scale = 1 if kind == "latency" else 1e-6
        for net, n in c["networks"].items():
            if not n["val_acc"]:
                continue
            arm = n["arm"]
            m = statistics.mean(n["val_acc"])
            sd = statistics.stdev(n["val_acc"]) if len(n["val_acc"]) > 1 else 0.0
            colour = colours.get(arm, "tab:green")
            marker = "*" if arm == "searched" else "<" if "early" in arm else "^" if "middle" in arm else \
                ">" if "late" in arm else "o"
            ax.errorbar(n["cost"] * scale, m, yerr=sd, fmt=marker, color=colour, capsize=3,
                        markersize=11 if arm == "searched" else 6, label=None if arm in seen else arm)
            seen.add(arm)
        t = c["target"] * scale
        ax.axvspan(t * (1 - TOL), t * (1 + TOL), color="0.92", zorder=0)
        ax.axhline(c["random_median"], color="0.5", lw=0.8, ls="--", label="random median")
        ax.axhline(c["random_p75"], color="0.5", lw=0.8, ls=":", label="random 75th percentile")
        ax.set_xlabel("predicted latency (ms, onnxruntime, 1 thread)" if kind == "latency" else
                      f"MACs (M) at {results['resolution']}px")
        ax.set_ylabel("validation accuracy (mean, sd over seeds)")
        ax.set_title(f"equal {'latency' if kind == 'latency' else 'MACs'}: searched at percentile "
                     f"{c['searched_percentile']:.0f}, tau {c['kendall_tau']:+.2f}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['dataset']}: searched vs random networks of the same cost ({results['recipe']})", fontsize=11)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
