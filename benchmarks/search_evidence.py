"""Does the search put LightNL where it helps? Searched networks against random and hand-placed
ones from the same space at the same MAC cost, trained with one recipe and several seeds.

The task is the built-in ``longrange`` set at 32x32 (``autonl.backends.torch.builtin_data``):
two white-framed key patches at least half the image apart among two black-framed
distractors; the label says whether the keys show the same pattern. A network must compare
features at two distant positions: a globally pooled local feature read by a linear head
cannot separate "same" from "different" (phi(A)+phi(A) against phi(A)+phi(B)), which is what
LightNL's products between positions provide (benchmarks/longrange_ablation.py: 0.50 without,
0.97 with one block). Whether *where* the blocks sit matters is what the hand-placed arms
check first: LightNL only at 16x16 (early: features with a receptive field about the size of
a key, few channels), only at 8x8 (middle), only at 4x4 (late, AutoNL-S's placement: rich
features, but 16 positions, a key straddles cells).

The space: a small MobileNetV2-like macro (stem 16, blocks 16 / 2x24 at 16x16, 2x32 at 8x8,
2x48 at 4x4, head 128) through the ``search-space`` pipeline (the built-in autonl space:
kernel 3/5, expansion 3/6, skip, and a LightNL candidate after every block, r 1/8 or 1/4,
stride 1 or 2, norm l2). Arms, all within +-5% of one MAC target (``--target``, default 40%
of the way from the smallest to the largest network):

- searched: ``autonl search`` (one search per seed) -> derive -> trained from scratch (as the
  paper retrains) with the same recipe and seed as every other network;
- random: ``--random`` networks sampled uniformly from the space, kept if within +-5%;
- no LightNL: the network without LightNL closest to the target;
- hand-placed early / middle / late: LightNL r=1/4 s=1 after every block of one stage and
  none elsewhere; late is AutoNL-S's spirit (LightNL in the later stages);
- everywhere: LightNL after every block (r=1/8, s=2, the cheapest), as the budget allows.
  Where an arm fixes LightNL, its kernels and expansions are sampled until it is within +-5%.

Every network is trained ``--train-steps`` steps (RMSprop lr 0.01, batch 64, 20000 rendered
training images, the ablation's recipe) with each of ``--seeds``; the table gives the
validation accuracy (1000 images) after the last step. Output in ``--out``: results.json,
table.txt, accuracy_vs_macs.png; finished trainings are reused when the command is run again.

    python benchmarks/search_evidence.py [--out runs/evidence] [--seeds 0 1 2] [--random 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TASK, RES = "longrange", 32
BLOCKS = ("ir_r1_k3_s1_e1_c16", "ir_r2_k3_s1_e3_c24", "ir_r2_k3_s2_e3_c32", "ir_r2_k3_s2_e3_c48")
STAGES = {"early (16x16)": ("lightnl_0", "lightnl_1", "lightnl_2"), "middle (8x8)": ("lightnl_3", "lightnl_4"),
          "late (4x4)": ("lightnl_5", "lightnl_6")}
TOL = 0.05


def build_space():
    from autonl.ir import Model
    from autonl.ir.presets import NetworkSpec, build_network
    from autonl.passes import PassManager

    spec = NetworkSpec("evidence", BLOCKS, act="silu", stem=16, head=128, dropout=0.0, bn_eps=1e-3,
                       bn_momentum=0.01)
    return PassManager("search-space").run(Model(build_network(spec, resolution=RES, num_classes=2), {})).graph


def derive(space, decisions):
    from autonl.passes.derive import Derive
    return Derive(decisions)(space).graph


def macs_of(space, decisions) -> int:
    from autonl.passes import analyze_cost
    return analyze_cost(derive(space, decisions)).macs


def lightnl_names(space) -> list[str]:
    return [n.name for n in space if n.op == "lightnl"]


def positions(decisions) -> str:
    """The inserted LightNL blocks, e.g. ``1(.25,s1) 5(.125,s2)``, or ``none``."""
    out = [f"{name.split('_')[1]}({d['r']:g},s{d['s']})".replace("0.", ".")
           for name, d in sorted(decisions.items()) if name.startswith("lightnl_") and d.get("insert")]
    return " ".join(out) or "none"


def sample(space, target: float, rng: random.Random, fix=None, tries: int = 20000) -> dict | None:
    """Random decisions (with ``fix(decisions)`` applied) within +-TOL of ``target``."""
    from autonl.passes import SearchSpace

    s = SearchSpace(space)
    for _ in range(tries):
        d = s.random(rng)
        if fix is not None:
            fix(d)
        if abs(macs_of(space, d) / target - 1) <= TOL:
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


def train_one(job: dict) -> dict:
    """One training (run in a worker process): the derived graph, trained from scratch."""
    import torch
    from autonl.backends.torch.config import TrainConfig
    from autonl.backends.torch.train import train
    from autonl.ir import parse_graph

    torch.set_num_threads(job["threads"])
    out = Path(job["out"])
    done = out / "evidence.json"
    if done.exists():
        return json.loads(done.read_text())
    graph = parse_graph(job["graph"])
    cfg = TrainConfig(data=TASK, steps=job["steps"], batch_size=64, optimizer="rmsprop", lr=0.01, seed=job["seed"],
                      workers=0, eval_every=job["steps"], log_every=job["steps"], checkpoint_every=job["steps"],
                      train_size=20000, val_size=1000)
    t0 = time.perf_counter()
    shutil.rmtree(out / "run", ignore_errors=True)    # an interrupted training starts over
    result = train(graph, cfg, out / "run", progress=False)
    row = {"arm": job["arm"], "net": job["net"], "seed": job["seed"], "val_acc": result["val_acc"],
           "train_s": time.perf_counter() - t0}
    done.write_text(json.dumps(row) + "\n")
    return row


def parse_search(spec: str, steps: int) -> dict:
    """``OPTIMIZER:LR[:WARMUP[:STEPS]]`` (e.g. ``sgd:0.05``, ``rmsprop:0.01:400:600``): the
    search's weight optimizer, its learning rate, the warm-up steps (default a third of the
    steps) and the steps (default --search-steps)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3, 4) or parts[0] not in ("sgd", "rmsprop"):
        sys.exit(f"error: --searches takes OPTIMIZER:LR[:WARMUP[:STEPS]] with OPTIMIZER sgd or rmsprop, got {spec!r}")
    steps = int(parts[3]) if len(parts) == 4 else steps
    warmup = int(parts[2]) if len(parts) >= 3 else steps // 3
    return {"optimizer": parts[0], "lr": float(parts[1]), "warmup": warmup, "steps": steps,
            "tag": f"{parts[0]}{float(parts[1]):g}w{warmup}s{steps}",
            "arm": f"searched ({parts[0]} lr {float(parts[1]):g}, {warmup}+{steps - warmup} steps)"}


def search_one(space_text: str, target: float, seed: int, steps: int, out: Path, threads: int,
               how: dict) -> tuple[dict, float]:
    import torch
    from autonl.backends.torch.config import SearchConfig
    from autonl.backends.torch.search import search
    from autonl.ir import parse_graph

    torch.set_num_threads(threads)
    if (out / "evidence_search.json").exists():
        meta = json.loads((out / "evidence_search.json").read_text())
        return json.loads((out / "decisions.json").read_text()), meta["search_s"]
    cfg = SearchConfig(target_macs=target, data=TASK, steps=steps, warmup_steps=how["warmup"], batch_size=64,
                       seed=seed, optimizer=how["optimizer"], lr=how["lr"], workers=0, log_every=50,
                       checkpoint_every=steps, train_size=20000, val_size=1000)
    shutil.rmtree(out, ignore_errors=True)            # an interrupted search starts over
    t0 = time.perf_counter()
    search(parse_graph(space_text), cfg, out, progress=False)
    seconds = time.perf_counter() - t0
    (out / "evidence_search.json").write_text(json.dumps({"search_s": seconds}) + "\n")
    return json.loads((out / "decisions.json").read_text()), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/evidence")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--random", type=int, default=10, help="random networks within +-5%% of the target")
    ap.add_argument("--target", type=float, default=0.4,
                    help="MAC target as a fraction of the way from the smallest to the largest network")
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--search-steps", type=int, default=450)
    ap.add_argument("--searches", nargs="+", default=["sgd:0.05"],
                    help="one searched arm per OPTIMIZER:LR[:WARMUP] (the search's weights; default: autonl "
                         "search's SGD lr 0.05, warm-up a third of the steps)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    ap.add_argument("--sample-seed", type=int, default=0)
    args = ap.parse_args()
    print("$ python " + shlex.join(sys.argv), flush=True)

    from autonl.ir import render
    from autonl.passes import analyze_cost

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = build_space()
    report = analyze_cost(space)
    lo, hi = report.macs, report.total("macs_max")
    target = lo + args.target * (hi - lo)
    print(f"space: {len(lightnl_names(space))} LightNL candidates, {lo / 1e6:.2f}M..{hi / 1e6:.2f}M MACs at {RES}px; "
          f"target {target / 1e6:.2f}M (+-{TOL:.0%})", flush=True)
    rng = random.Random(args.sample_seed)
    nets: dict[str, tuple[str, dict]] = {}     # net id -> (arm, decisions)
    for i in range(args.random):
        nets[f"random-{i}"] = ("random", sample(space, target, rng))
    no_nl = [sample(space, target, rng, only_at(())) for _ in range(40)]
    nets["no-lightnl"] = ("no LightNL", min((d for d in no_nl if d), key=lambda d: abs(macs_of(space, d) - target)))
    for stage, names in STAGES.items():
        nets[f"hand-{stage.split()[0]}"] = (f"hand: {stage}", sample(space, target, rng, only_at(names)))
    nets["everywhere"] = ("everywhere", sample(space, target, rng, only_at(lightnl_names(space), r=0.125, s=2)))
    missing = [k for k, (_, d) in nets.items() if d is None]
    if missing:
        sys.exit(f"error: no network within +-5% of the target for {missing}; choose another --target")

    t0 = time.perf_counter()
    search_s, supernet_acc = [], {}
    for spec in args.searches:
        how = parse_search(spec, args.search_steps)
        for seed in args.seeds:
            folder = out / (f"search-{seed}" if spec == "sgd:0.05" else f"search-{how['tag']}-{seed}")
            d, seconds = search_one(render(space, "text"), target, seed, how["steps"], folder, 2, how)
            net = f"searched-{seed}" if spec == "sgd:0.05" else f"searched-{how['tag']}-{seed}"
            nets[net] = (how["arm"], d)
            search_s.append(seconds)
            supernet_acc[net] = json.loads((folder / "result.json").read_text())["supernet_val_acc"]
            print(f"{how['arm']} seed {seed}: {seconds:.0f} s, {macs_of(space, d) / 1e6:.2f}M MACs, supernet val acc "
                  f"{supernet_acc[net]:.3f}, LightNL {positions(d)}", flush=True)
    jobs = []
    for net, (arm, d) in nets.items():
        seeds = [int(net.rsplit("-", 1)[1])] if arm.startswith("searched") else args.seeds
        for seed in seeds:
            jobs.append({"arm": arm, "net": net, "seed": seed, "steps": args.train_steps, "threads": 1,
                         "graph": render(derive(space, d), "text"), "out": str(out / "train" / f"{net}-s{seed}")})
    print(f"{len(jobs)} trainings of {args.train_steps} steps, {args.jobs} at a time", flush=True)
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(train_one, jobs):
            rows.append(row)
            print(f"  {row['net']:<16} seed {row['seed']}  val acc {row['val_acc']:.3f}  ({row['train_s']:.0f} s)",
                  flush=True)
    wall = time.perf_counter() - t0
    summarize(space, nets, rows, target, search_s, out, wall, supernet_acc)


def summarize(space, nets, rows, target, search_s, out: Path, wall: float, supernet_acc: dict) -> None:
    per_net: dict[str, list[float]] = {}
    train_s = [r["train_s"] for r in rows]
    for r in rows:
        per_net.setdefault(r["net"], []).append(r["val_acc"])
    arms: dict[str, list[str]] = {}
    for net, (arm, _) in nets.items():
        arms.setdefault(arm, []).append(net)

    def ms(v):
        return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)

    lines = [f"target {target / 1e6:.2f}M MACs at {RES}px (+-{TOL:.0%}); validation accuracy on {TASK} (chance 0.5)",
             f"{'arm':<40} {'nets':>4} {'acc mean':>8} {'sd':>6}  {'MACs':>7}  LightNL positions (block(r,s))"]
    for arm, ids in arms.items():
        accs = [a for i in ids for a in per_net[i]]
        m, s = ms(accs)
        macs = statistics.mean(macs_of(space, nets[i][1]) for i in ids)
        pos = positions(nets[ids[0]][1]) if len(ids) == 1 else f"{len(ids)} networks, see results.json"
        if arm.startswith("searched"):
            pos = "; ".join(f"{macs_of(space, nets[i][1]) / 1e6:.2f}M: {positions(nets[i][1])}" for i in ids)
        lines.append(f"{arm:<40} {len(ids):>4} {m:>8.3f} {s:>6.3f}  {macs / 1e6:>6.2f}M  {pos}")
    rand_means = sorted((ms(per_net[i])[0] for i in arms.get("random", [])), reverse=True)
    for arm, ids in arms.items():
        if not arm.startswith("searched"):
            continue
        searched = ms([a for i in ids for a in per_net[i]])[0]
        rank = 1 + sum(m > searched for m in rand_means)
        lines.append(f"{arm}: mean {searched:.3f} ranks {rank} of {len(rand_means) + 1} against the random networks' "
                     f"means ({', '.join(f'{m:.3f}' for m in rand_means)}); supernet val acc at the end of each "
                     f"search {', '.join(f'{supernet_acc[i]:.3f}' for i in ids)}")
    lines.append(f"cost: one search {statistics.mean(search_s):.0f} s (2 threads), one training "
                 f"{statistics.mean(train_s):.0f} s (1 thread, two at a time; {len(rows)} trainings): a search costs "
                 f"about {statistics.mean(search_s) / statistics.mean(train_s):.1f} trainings' wall time; this "
                 f"invocation {wall / 60:.1f} min (finished trainings and searches are reused)")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.txt").write_text(text + "\n")
    results = {"target_macs": target, "resolution": RES, "task": TASK, "rows": rows,
               "networks": {net: {"arm": arm, "decisions": d, "macs": macs_of(space, d), "lightnl": positions(d),
                                  "val_acc": per_net.get(net, [])} for net, (arm, d) in nets.items()},
               "search_s": search_s, "supernet_val_acc": supernet_acc}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "accuracy_vs_macs.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    colours = {"random": "tab:gray", "no LightNL": "tab:blue", "everywhere": "tab:purple"}
    seen = set()
    for net, n in results["networks"].items():
        accs = n["val_acc"]
        if not accs:
            continue
        arm = n["arm"]
        m = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        colour = colours.get(arm, "tab:green" if arm.startswith("hand") else
                             "tab:red" if arm.startswith("searched (sgd") else "tab:orange")
        marker = {"hand: early (16x16)": "<", "hand: middle (8x8)": "^", "hand: late (4x4)": ">"}.get(arm, "o")
        ax.errorbar(n["macs"] / 1e6, m, yerr=sd, fmt=marker, color=colour, capsize=3,
                    label=None if arm in seen else arm)
        seen.add(arm)
    t = results["target_macs"] / 1e6
    ax.axvspan(t * (1 - TOL), t * (1 + TOL), color="0.9", zorder=0)
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel(f"MACs (M) at {results['resolution']}px")
    ax.set_ylabel("validation accuracy (mean, sd over seeds)")
    ax.set_title(f"{results['task']}: searched vs random and hand-placed networks at one cost")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
