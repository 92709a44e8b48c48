"""Landing a search's decisions on its target (:func:`land`), and choosing among landing
candidates after a search (:func:`choose`): the thresholds' decisions and networks a few gate
flips from them, all within the landing tolerance of the target, each evaluated in
the supernet with its own batch-norm statistics on the search's validation images (held-out
training images with ``--holdout``), the most accurate kept (SPOS and Once-for-All end their
searches with such an evaluation of sub-networks; here it only looks near where the
thresholds landed)."""
from __future__ import annotations

import copy
import json
import math
import random
import sys

import torch

from ..train.evaluation import evaluate, recalibrate_bn
from .supernet import Supernet

LANDING_TOLERANCE = 0.05    # a derived network further off its MAC target gets a warning line
MEASURED_CANDIDATES = 8     # single flips that land_measured evaluates, the least decided first


def land(supernet: Supernet, decisions: dict, target: float, tolerance: float = LANDING_TOLERANCE) -> tuple[dict, list]:
    """``(decisions, flipped)``: the thresholds' decisions, brought within ``tolerance`` of
    ``target`` where they are not, by flipping the least decided gates.

    The gates are discrete, so near the end of a search the cost moves in steps of whole
    options and can stop on either side of the target (on Fashion-MNIST at 32 px, 400 steps:
    +21%, +5% and +19% off in three searches, oscillating between two settings a block's
    expansion apart). Repeatedly, the gate whose statistic lies nearest its threshold among
    those whose flip brings the cost closer to the target (in ratio) is flipped, each gate at
    most once, until the cost is within ``tolerance`` or no flip helps: the choices the
    search was least sure of give way, the confident ones stay."""
    current, flipped = copy.deepcopy(decisions), []
    cost = supernet.cost_of(current)
    order = _margin_order(supernet)
    used: set = set()
    while abs(cost / target - 1) > tolerance:
        for r in order:
            if (r.node, r.attr) in used:
                continue
            trial, line = _flip(current, r)
            c = supernet.cost_of(trial)
            if abs(math.log(c / target)) < abs(math.log(cost / target)):
                used.add((r.node, r.attr))
                flipped.append(line)
                current, cost = trial, c
                break
        else:
            break
    return current, flipped


def _flip(decisions: dict, ref) -> tuple[dict, str]:
    trial = copy.deepcopy(decisions)
    was = trial[ref.node][ref.attr]
    trial[ref.node][ref.attr] = ref.gate.off_value if was == ref.gate.on_value else ref.gate.on_value
    return trial, f"{ref.node}.{ref.attr}: {was} -> {trial[ref.node][ref.attr]}"


def _margin_order(supernet: Supernet) -> list:
    """The gates, least decided first: margins to 6 decimals, ties in the graph's order (float
    noise between two runs, another thread count or a resumed run, must not reorder gates that
    are alike)."""
    return [r for _, _, r in sorted(
        (round(abs(float(r.gate.statistic - r.gate.threshold.detach())), 6) if r.gate.statistic is not None
         else math.inf, i, r) for i, r in enumerate(supernet.gate_refs))]


def _fixed_batches(loader, images: int, max_bytes: int = 512 << 20) -> list:
    """The first batches of ``loader`` holding about ``images`` images (fewer where they would
    take more than ``max_bytes``: 850 at 224x224), kept on the host, so that every candidate is
    measured on the same images, the same way."""
    out, seen, size = [], 0, 0
    for x, y in loader:
        out.append((x, y))
        seen += len(y)
        size += x.element_size() * x.nelement()
        if seen >= images or size >= max_bytes:
            break
    return out


def evaluate_path(supernet: Supernet, decisions: dict, bn_loader, score_loader, device, bn_batches: int = 20) -> dict:
    """:func:`evaluate`'s figures of the sub-network ``decisions`` in ``supernet``: forced to
    it, its batch-norm statistics re-estimated on ``bn_batches`` batches of ``bn_loader``, then
    evaluated on ``score_loader``. The supernet stays forced to it."""
    supernet.force(decisions)
    recalibrate_bn(supernet, bn_loader, device, batches=bn_batches)
    with torch.no_grad():
        return evaluate(supernet, score_loader, device)


def land_measured(supernet: Supernet, decisions: dict, target: float, train_loader, score_loader, device,
                  max_candidates: int = MEASURED_CANDIDATES, tolerance: float = LANDING_TOLERANCE,
                  log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, list, list[dict]]:
    """``(decisions, flipped, rows)``: like :func:`land`, but where one gate flip can bring the
    cost within ``tolerance``, the flip is chosen by measurement instead of by margin alone: the
    ``max_candidates`` least decided gates whose flip lands within the tolerance are each
    switched in the supernet, its batch-norm statistics re-estimated on the same training
    batches, and its cross-entropy measured on the same images of ``score_loader`` (held-out
    training images when the search has ``--holdout``, else training batches; never the
    validation split); the lowest loss wins (ties: the least decided). Where no single flip
    lands, :func:`land`'s greedy flips are used as they are.

    Why: the margin compares gates of different kinds (a whole block's skip, a kernel, a
    LightNL ratio) on one scale, while the supernet's own loss measures what each candidate
    costs the network it was trained as. On Fashion-MNIST it chose as well as the margin rule,
    not better (docs/benchmarks.md), so the margin rule stays the default."""
    if abs(supernet.cost_of(decisions) / target - 1) <= tolerance:
        return copy.deepcopy(decisions), [], []
    cands = []
    for r in _margin_order(supernet):
        trial, line = _flip(decisions, r)
        if abs(supernet.cost_of(trial) / target - 1) <= tolerance:
            cands.append((trial, line))
        if len(cands) >= max_candidates:
            break
    if not cands:
        landed, flipped = land(supernet, decisions, target, tolerance)
        return landed, flipped, []
    # the training sampler's epoch is put back afterwards, so that what follows the landing (the
    # chosen network's BN statistics) reads the batches it reads with the margin landing
    sampler = getattr(train_loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    bn_batches = _fixed_batches(train_loader, 20 * (getattr(train_loader, "batch_size", None) or 64))
    score = _fixed_batches(score_loader, 2000)
    if epoch is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    rows, best = [], 0
    for i, (trial, line) in enumerate(cands):
        m = evaluate_path(supernet, trial, bn_batches, score, device, len(bn_batches))
        loss = m["val_loss"]              # None: no image with finite logits (never kept over a number)
        rows.append({"flip": line, "cost": supernet.cost_of(trial), "loss": loss, "acc": m["val_acc"]})
        if loss is not None and (rows[best]["loss"] is None or loss < rows[best]["loss"]):
            best = i
    supernet.force(None)
    for i, r in enumerate(rows):
        r["chosen"] = i == best
    log("landing: measured " + "; ".join(f"{r['flip']} loss " + (f"{r['loss']:.4f}" if r["loss"] is not None else "n/a")
                                        for r in rows) + f"; kept {rows[best]['flip']}")
    return cands[best][0], [cands[best][1]], rows


def neighbours(supernet: Supernet, decisions: dict, target: float, count: int, seed: int) -> list[dict]:
    """``decisions`` and up to ``count - 1`` distinct others: 1 to 3 random gates flipped,
    then landed again (:func:`land`), kept if within the landing tolerance."""
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
        if key in seen or abs(supernet.cost_of(trial) / target - 1) > LANDING_TOLERANCE:
            continue
        seen.add(key)
        out.append(trial)
    return out


def choose(supernet: Supernet, decisions: dict, target: float, count: int, seed: int, train_loader, val_loader,
           device, holdout: int | None = None, log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, list[dict]]:
    """The most accurate of :func:`neighbours` (ties: the thresholds' own, then the earlier),
    and one row per candidate (cost, accuracy, the gates it changed)."""
    rows, best = [], 0
    if not holdout:
        log("warning: the landing candidates are chosen on the validation split, the images a model's accuracy is "
            "reported on, so that accuracy is optimistic; give --holdout N to choose on held-out training images")
    cands = neighbours(supernet, decisions, target, count, seed)
    for i, cand in enumerate(cands):
        acc = evaluate_path(supernet, cand, train_loader, val_loader, device)["val_acc"]
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
