"""The figures of benchmarks/search_evidence.py: percentiles, the bootstrap interval, Kendall
tau, search agreement, the table, the JSON and the plot."""
from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
from pathlib import Path

from evidence_space import TOL, Cost, positions
from harness import cpu_model


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


def seed_reliability(accs: list[list[float]]) -> dict | None:
    """How much of the networks' spread is the network and not the training seed: Pearson r
    between two seeds' accuracies across the networks (mean over seed pairs), and the
    Spearman-Brown reliability of the mean over all seeds, ``k r / (1 + (k - 1) r)``. Near 0,
    the networks' differences at this recipe are seed noise: no percentile or tau can be read
    from them."""
    import itertools

    from scipy.stats import pearsonr

    k = min(len(a) for a in accs) if accs else 0
    if k < 2 or len(accs) < 3:
        return None
    columns = [[a[i] for a in accs] for i in range(k)]
    if any(max(c) == min(c) for c in columns):     # a seed gave every network the same accuracy
        return None
    rs = [float(pearsonr(columns[i], columns[j])[0]) for i, j in itertools.combinations(range(k), 2)]
    r = statistics.mean(rs)
    return {"r": r, "pairs": rs, "networks": len(accs), "seeds": k,
            "mean_reliability": k * r / (1 + (k - 1) * r) if r > -1 / (k - 1) else None}


def search_curve(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [{"step": r["step"], "train_acc": r.get("train_acc"), "warmup": r.get("warmup")} for r in rows
            if "train_acc" in r]


def summarize(args, plan, space, work: Path, rows: dict, searched: dict, tag: str, folders: dict,
              wall: float, sets: dict) -> dict:
    """Every comparison's figures (``out["comparisons"]``) and the table (``out["table"]``)."""
    from autonl.backends.torch.data import chance_level, describe

    out = {"dataset": args.data, "dataset_description": describe(args.data), "resolution": args.resolution,
           "train_size": args.train_size, "chance": chance_level(args.data)[0], "recipe": tag,
           "search_settings": sets, "augmentation": args.aug or "the data's defaults",
           "search_steps": args.search_steps,
           "warmup_steps": args.warmup_steps if args.warmup_steps is not None else args.search_steps // 3,
           "train_steps": args.train_steps, "seeds": args.seeds, "search_seeds": args.search_seeds,
           "holdout": args.holdout, "cpu": cpu_model(), "wall_minutes": wall / 60,
           "command": "python " + shlex.join(sys.argv), "comparisons": {}}
    lines = [f"{describe(args.data)}; {args.resolution}x{args.resolution}; training {args.train_steps} steps x batch 64, "
             f"seeds {args.seeds}; searches {args.search_steps} steps, seeds {args.search_seeds}, recipe {tag}; "
             f"{out['cpu']}"]
    for kind in args.costs:
        comp = plan["comparisons"][kind]
        cost = Cost(kind, space, work / "latency_table.json")
        c, s_nets, taus = _comparison(args, kind, comp, cost, rows, searched, folders)
        out["comparisons"][kind] = c
        lines += _comparison_lines(kind, comp, cost, c, s_nets, taus)
    lines.append(f"\nwall time of this invocation {wall / 60:.1f} min (finished work is reused)")
    out["table"] = "\n".join(lines)
    return out


def _comparison(args, kind: str, comp: dict, cost: Cost, rows: dict, searched: dict, folders: dict):
    """One comparison's figures: the networks' accuracies, the searched mean's percentile among
    the random networks, the bootstrap interval, Kendall tau of each search's supernet."""
    from scipy.stats import kendalltau

    def accs_of(net):
        return [r["val_acc"] for k, r in sorted(rows.items()) if k.startswith(f"train:{net}:")]  # seed order

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
         "seed_reliability": seed_reliability([n["val_acc"] for n in nets.values() if len(n["val_acc"]) > 1]),
         "networks": {**nets, **s_nets}}
    c["bootstrap_excludes_0"] = c["bootstrap_90"][0] > 0 or c["bootstrap_90"][1] < 0
    c["searched_off_target"] = {k: n["off_target"] for k, n in s_nets.items() if abs(n["off_target"]) > TOL}
    return c, s_nets, taus


def _comparison_lines(kind: str, comp: dict, cost: Cost, c: dict, s_nets: dict, taus: dict) -> list[str]:
    """The table's lines of one comparison."""
    nets, lo, hi, off = c["networks"], *c["bootstrap_90"], c["searched_off_target"]
    s_mean, no_nl, p75 = c["searched_mean"], c["no_lightnl_mean"], c["random_p75"]
    s_runs = [a for n in s_nets.values() for a in n["val_acc"]]
    random_means = [statistics.mean(n["val_acc"]) for n in nets.values() if n["arm"] == "random"]
    lines: list[str] = []
    lines += ["", f"== equal {'predicted latency (onnxruntime table, 1 thread)' if kind == 'latency' else 'MACs'}: "
                  f"target {cost.fmt(comp['target'])} +-{TOL:.0%} (space {cost.fmt(comp['lo'])}..{cost.fmt(comp['hi'])})",
              f"{'network':<22} {'arm':<26} {'cost':>12} {'acc mean':>9} {'sd':>6}  LightNL (block(r,s))"]
    for net, n in sorted(nets.items(), key=lambda kv: -statistics.mean(kv[1]["val_acc"] or [0])):
        v = n["val_acc"]
        lines.append(f"{net:<22} {n['arm']:<26} {cost.fmt(n['cost']):>12} "
                     f"{statistics.mean(v) if v else float('nan'):>9.4f} "
                     f"{statistics.stdev(v) if len(v) > 1 else 0:>6.4f}  {positions(n['decisions'])}")
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
              _reliability_line(c["seed_reliability"]),
              f"supernet ranking: Kendall tau {c['kendall_tau']:+.3f} (each search: "
              + ", ".join(f"{t['tau']:+.3f} p={t['p']:.2g}" for t in taus.values())
              + f"; {len(next(iter(taus.values()))['supernet_acc'])} networks)",
              "supernet during the search (sampled path, training batches; end of warm-up -> end; held-out "
              "images at the end): " + "; ".join(
                  f"{k}: {_at_warm_end(n['curve'])} -> {_last(n['curve'])}, held-out {n['supernet_heldout_acc']:.3f}"
                  for k, n in s_nets.items()),
              f"search agreement: {c['agreement']['unanimous']} of {c['agreement']['decisions']} decisions the same "
              f"in all {len(s_nets)} searches; they differ on: {', '.join(c['agreement']['differ']) or 'nothing'}"]
    return lines


def _reliability_line(rel: dict | None) -> str:
    if rel is None:
        return ("seed reliability: undefined (it needs >= 2 training seeds, >= 3 networks, and accuracies "
                "that differ between networks)")
    mr = rel["mean_reliability"]
    return (f"seed reliability (do the networks differ beyond the training seed?): r {rel['r']:+.2f} between seeds "
            f"across {rel['networks']} networks; the mean of {rel['seeds']} seeds "
            + (f"{mr:.2f}" if mr is not None else "undefined (r too negative)")
            + ("; near 0: the ranking among these networks is seed noise" if rel["r"] < 0.2 else ""))


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
