"""Choosing among landing candidates after a search: the thresholds' decisions and networks a
few gate flips from them, all within the landing tolerance of the target, each evaluated in
the supernet with its own batch-norm statistics on the search's validation images (held-out
training images with ``--holdout``), the most accurate kept (SPOS and Once-for-All end their
searches with such an evaluation of sub-networks; here it only looks near where the
thresholds landed)."""
from __future__ import annotations

import copy
import json
import random
import sys

import torch

from .evaluation import evaluate, recalibrate_bn
from .supernet import Supernet


def neighbours(supernet: Supernet, decisions: dict, target: float, count: int, seed: int, land,
               tolerance: float) -> list[dict]:
    """``decisions`` and up to ``count - 1`` distinct others: 1 to 3 random gates flipped,
    then landed again (``land(supernet, decisions, target)``), kept if within ``tolerance``."""
    rng = random.Random(seed)
    refs = supernet.gate_refs
    out, seen = [decisions], {json.dumps(decisions, sort_keys=True)}
    for _ in range(50 * count):
        if len(out) >= count or not refs:
            break
        trial = copy.deepcopy(decisions)
        for r in rng.sample(refs, k=min(len(refs), rng.randint(1, 3))):
            was = trial[r.node][r.attr]
            trial[r.node][r.attr] = r.gate.off_value if was == r.gate.on_value else r.gate.on_value
        trial, _ = land(supernet, trial, target)
        key = json.dumps(trial, sort_keys=True)
        if key in seen or abs(supernet.cost_of(trial) / target - 1) > tolerance:
            continue
        seen.add(key)
        out.append(trial)
    return out


def choose(supernet: Supernet, decisions: dict, target: float, count: int, seed: int, train_loader, val_loader,
           device, land, tolerance: float, holdout: int | None = None,
           log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, list[dict]]:
    """The most accurate of :func:`neighbours` (ties: the thresholds' own, then the earlier),
    and one row per candidate (cost, accuracy, the gates it changed)."""
    rows, best = [], 0
    if not holdout:
        log("warning: the landing candidates are chosen on the validation split, the images a model's accuracy is "
            "reported on, so that accuracy is optimistic; give --holdout N to choose on held-out training images")
    cands = neighbours(supernet, decisions, target, count, seed, land, tolerance)
    for i, cand in enumerate(cands):
        supernet.force(cand)
        recalibrate_bn(supernet, train_loader, device)
        with torch.no_grad():
            acc = evaluate(supernet, val_loader, device)["val_acc"]
        changed = sorted(f"{n}.{a}" for n in cand for a in cand[n] if decisions.get(n, {}).get(a) != cand[n][a])
        rows.append({"cost": supernet.cost_of(cand), "val_acc": acc, "changed": changed})
        if acc > rows[best]["val_acc"]:
            best = i
    accs = ", ".join(f"{r['val_acc']:.3f}" for r in rows)
    log(f"candidates: {len(cands)} evaluated ({accs}); "
        f"kept #{best} ({rows[best]['val_acc']:.3f}" + (f", the thresholds' own {rows[0]['val_acc']:.3f})" if best
                                                          else ": the thresholds' own)"))
    for i, r in enumerate(rows):
        r["chosen"] = i == best
    return cands[best], rows
