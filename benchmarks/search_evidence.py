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
``seed_reliability`` (Pearson r between two training seeds' accuracies across the non-searched
networks, and the Spearman-Brown reliability of their mean: near 0, the networks differ only by
seed noise on this data and recipe, and neither the percentile nor tau means anything);
``kendall_tau`` (mean over searches, and each); the supernet's accuracy during each search
(training batches of the sampled path; held-out images at the end); which decisions the
searches agree on.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import harness
from evidence_figures import plot, summarize
from evidence_space import TOL, Cost, build_space, derive, only_at, positions, sample, stages

PLAN_VERSION = 1
# settings the plan depends on: a run with others needs another --work folder
PLAN_KEYS = ("data", "resolution", "target", "random", "sample_seed", "costs")


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
    watch = harness.Stopwatch()
    shutil.rmtree(out / "run", ignore_errors=True)    # an interrupted training starts over
    result = train(parse_graph(job["graph"]), cfg, out / "run", progress=False)
    row = {"kind": "train", "net": job["net"], "seed": job["seed"], "val_acc": result["val_acc"],
           "seconds": watch.seconds}
    harness.write_json(done, row)
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
    watch = harness.Stopwatch()
    if (out / "checkpoint.pt").exists():
        result = search(None, None, out, resume=True, progress=False)
    else:
        shutil.rmtree(out, ignore_errors=True)
        result = search(parse_graph(job["space"]), SearchConfig(**job["config"]), out, progress=False)
    row = {"kind": "search", "net": job["net"], "seconds": watch.seconds, "result": result,
           "decisions": json.loads((out / "decisions.json").read_text())}
    harness.write_json(done, row)
    return row


def rank_job(job: dict) -> dict:
    """The supernet of one search, forced to each network of ``job['nets']`` in turn (batch-norm
    statistics re-estimated on training batches), evaluated on validation images."""
    _threads(job["threads"])
    import torch
    from autonl.backends.torch.train.checkpoint import read_checkpoint
    from autonl.backends.torch.config import SearchConfig
    from autonl.backends.torch.data import make_loaders
    from autonl.backends.torch.search import cost_resolution, latency_table
    from autonl.backends.torch.search.landing import evaluate_path
    from autonl.backends.torch.search.supernet import Supernet
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
        accs[net] = evaluate_path(supernet, decisions, train_loader, val_loader, device)["val_acc"]
    row = {"kind": "rank", "net": job["net"], "supernet_acc": accs}
    harness.write_json(out, row)
    return row


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
        drawn = {k: v for k, v in plan["settings"].items() if k != "costs"}
        missing = [c for c in args.costs if c not in plan["comparisons"]]
        if drawn != {k: v for k, v in settings.items() if k != "costs"} or missing:
            sys.exit(f"error: {path} was drawn with {plan['settings']}, not {settings}; "
                     f"give another --work folder (or delete it)")
        return plan      # a run may compare at fewer of the costs the plan was drawn for
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
    harness.write_json(path, plan)
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


# settings added since, with the value that leaves the search as it was: left out of the key
# while they hold it, so that searches run before they existed are still found
ADDED_OFF = {"target_ramp": 0.0}


def recipe_key(config: dict) -> str:
    """A short name for everything a search computes with except its target and seed (the
    search's defaults included, so that a changed default searches anew)."""
    import hashlib
    from dataclasses import asdict

    from autonl.backends.torch.config import SearchConfig

    full = {k: v for k, v in asdict(SearchConfig(**config)).items()
            if k not in RUN_ONLY and not (k in ADDED_OFF and v == ADDED_OFF[k])}
    full["revision"] = SEARCH_REVISION
    return hashlib.sha1(json.dumps(full, sort_keys=True).encode()).hexdigest()[:8]


def parse_args() -> argparse.Namespace:
    ap = harness.parser(__doc__, first="\n", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--holdout", type=int, help="training images a search holds out as its validation "
                    "[default: 2000, or a fifth of the training images where that is fewer]")
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
    return args


def prepare(args) -> tuple:
    """The data checked, the work folder, the space, the latency table (measured once) and the
    plan (drawn once): ``(work, prefix, space, space_text, plan)``."""
    from autonl.backends.torch.data import make_loaders, num_classes
    from autonl.ir import AutonlError, render

    try:
        classes = num_classes(args.data)
        train, _, _ = make_loaders(args.data, args.resolution, 64, workers=0, train_size=args.train_size, val_size=1,
                                   **args.aug)      # the files are there and decode
    except AutonlError as e:
        sys.exit(f"error: {e}")
    n_train = len(train.dataset)
    if args.holdout is None:
        args.holdout = min(2000, max(1, n_train // 5))
    elif not 1 <= args.holdout < n_train:
        sys.exit(f"error: --holdout {args.holdout}: a search holds out between 1 and {n_train - 1} of the "
                 f"{n_train} training images")
    name = Path(args.data).name if os.sep in args.data or Path(args.data).exists() else args.data
    work = Path(args.work or f"runs/evidence-{name}")
    tag = recipe_tag(parse_sets(args.sets))
    prefix = harness.results_prefix(args.results or f"benchmarks/results/search_evidence_{name}"
                                    + ("" if tag == "default" else f"_{tag}"))
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
    return work, prefix, space, space_text, plan


def first_jobs(args, plan, space, space_text: str, work: Path, sets: dict, tag: str) -> list[dict]:
    """Every job known before a search ends, in the order they may start: the searches, then
    the non-searched networks' trainings."""
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
    for kind in args.costs:
        for net, n in plan["comparisons"][kind]["networks"].items():
            for seed in args.seeds:
                jobs.append(train_job_of(args, space, f"{kind}/{net}", n["decisions"], seed, work / "train"))
    return jobs


def main() -> None:
    args = parse_args()
    print("$ python " + shlex.join(sys.argv), flush=True)
    started = harness.Stopwatch()
    work, prefix, space, space_text, plan = prepare(args)
    sets = parse_sets(args.sets)
    tag = recipe_tag(sets)
    jobs = first_jobs(args, plan, space, space_text, work, sets, tag)
    folders = {j["net"]: Path(j["out"]) for j in jobs if j["kind"] == "search"}
    rows, searched = run_jobs(args, jobs, plan, space, work, tag, started)
    results = summarize(args, plan, space, work, rows, searched, tag, folders, started.seconds, sets)
    # the prefix may hold a dot (a recipe tag such as warmup_drop=0.5): add, never replace, a suffix
    harness.write_results(prefix, results, results["table"] + "\n")
    plot(results, Path(f"{prefix}.png"))
    print("\n" + results["table"])
    print(f"\nwrote {prefix}.json, .txt, .png", flush=True)


def run_jobs(args, jobs: list[dict], plan, space, work: Path, tag: str,
             started: harness.Stopwatch) -> tuple[dict, dict]:
    """Run ``jobs`` ``args.jobs`` at a time; each search, when it ends, adds its network's
    trainings and its supernet's ranking. Returns (rows by job, searches by network)."""
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
                elapsed = started.seconds / 60
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
    return rows, searched


def train_job_of(args, space, net: str, decisions: dict, seed: int, root: Path) -> dict:
    from autonl.ir import render
    aug = "".join(f"-{k}{v}" for k, v in sorted(args.aug.items()))       # non-default augmentation
    return {"kind": "train", "net": net, "seed": seed, "data": args.data, "steps": args.train_steps,
            "train_size": args.train_size, "threads": 1, "graph": render(derive(space, decisions), "text"),
            "aug": args.aug, "out": str(root / f"{net.replace('/', '_').replace('@', '_')}-t{args.train_steps}{aug}-s{seed}")}


if __name__ == "__main__":
    main()
