"""The differentiable single-path search (method.md section 3), on CPU, GPU or torchrun.

Objective: ``L = CE + lambda * |log(C(g) / T)|`` where ``C(g)`` is the MACs of the sub-network
the gates select (:class:`~autonl.backends.torch.search.supernet.SupernetCost`), or its latency
predicted by a latency table (:mod:`autonl.backends.latency`), and ``T`` the target.
We chose this target-aware form over Single-Path NAS's ``lambda * log(C)`` so that one run
lands near ``T`` without sweeping lambda: it pulls the cost down while above the target and
up while below, with the same strength on both sides, and the thresholds' learning rate
stays at its value for the first half of the search (short searches reach the target)
then decays to zero (cosine) so the decisions settle at the end. A derived network more
than 5% off the target gets a warning line (and ``landing_warning`` in result.json).

Schedule: ``warmup_steps`` with every option on (gates forced on, only weights train, no cost
term), then weights (SGD) and thresholds/importances (Adam) each with its own optimiser on the
same loss. Outputs in the run directory: ``decisions.json``, ``search_graph.json``/``.ir``
(the relaxed graph), ``metrics.jsonl``, ``trace.jsonl`` (every gate's statistic, threshold and
state per logged step), ``macs.png`` (``latency.png``) and ``decisions.png``, ``checkpoint.pt`` every N steps,
``result.json``. ``resume=True`` continues exactly (see :mod:`.loop`).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from autonl.ir import AutonlError, Graph, atomic_write
from autonl.ir.node_cost import format_count
from autonl.ir.decisions import dumps_decisions
from autonl.passes import resize_graph

from ...locks import output_lock
from ...processes import die_with_parent
from .arch_optim import SharedAdam
from ..config import SearchConfig
from ..device import autocast, memory_format, pick_device
from ..train.evaluation import evaluate, recalibrate_bn
from .landing import LANDING_TOLERANCE, choose, land, land_measured
from ..data import DATA_FACTS_FILE, augmentation, data_facts
from ..train.loop import Loop, Run, StepResult, cosine_with_warmup, make_optimizer, open_run, seed_all
from .supernet import Supernet

__all__ = ["SearchConfig", "check_target", "distributed", "finish", "make_optimizers", "plot_search", "search",
           "search_step"]


def check_target(supernet: Supernet, target: float) -> None:
    check_target_bounds(*supernet.cost_model.bounds(), target, supernet.cost_unit)


def check_target_bounds(lo: float, hi: float, target: float, unit: str = "MACs") -> None:
    """One line when ``target`` lies outside the space's reach ``[lo, hi]`` (MACs, or ms)."""
    if unit == "ms":
        if not lo <= target <= hi:
            raise AutonlError(f"target {target:.3f} ms is {'below' if target < lo else 'above'} the reach of this "
                              f"search space by the latency table: its fastest sub-network takes {lo:.3f} ms, its "
                              f"slowest {hi:.3f} ms")
        return
    if target < lo:
        raise AutonlError(f"target {format_count(target)} MACs is below the smallest network of this search "
                          f"space ({format_count(lo)} MACs; the largest has {format_count(hi)})")
    if target > hi:
        raise AutonlError(f"target {format_count(target)} MACs is above the largest network of this search "
                          f"space ({format_count(hi)} MACs; the smallest has {format_count(lo)})")


def distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when torchrun started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def plot_search(run: Run, target: float, gate_names: list[str], unit: str = "MACs") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run.metrics.exists() or not (run.folder / "trace.jsonl").exists():
        return
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    key, scale, label = ("latency_ms", 1.0, "predicted latency (ms)") if unit == "ms" else ("macs", 1e-6, "MACs (M)")
    rows = [r for r in rows if key in r]
    trace = [json.loads(line) for line in (run.folder / "trace.jsonl").read_text().splitlines() if line.strip()]
    if not rows or not trace:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["step"] for r in rows], [r[key] * scale for r in rows], label="selected sub-network")
    ax.axhline(target * scale, color="k", ls="--", label="target")
    ax.set_xlabel("step"), ax.set_ylabel(label), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    name = "latency.png" if unit == "ms" else "macs.png"
    tmp = run.folder / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(run.folder / name)

    grid = torch.tensor([[t["gates"][n][2] for n in gate_names] for t in trace]).T.numpy()
    fig, ax = plt.subplots(figsize=(10, max(4, len(gate_names) * 0.12)))
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="Greens", vmin=0, vmax=1,
              extent=(trace[0]["step"], trace[-1]["step"], len(gate_names) - 0.5, -0.5))
    ax.set_yticks(range(len(gate_names)))
    ax.set_yticklabels(gate_names, fontsize=5)
    ax.set_xlabel("step")
    ax.set_title("gate state (green: the dearer option is on)")
    fig.tight_layout()
    tmp = run.folder / ".decisions.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(run.folder / "decisions.png")


ARCH_LR_HOLD = 0.5          # share of the post-warm-up steps at the full threshold learning rate


def arch_lr_factor(step: int, steps: int) -> float:
    """The thresholds' learning-rate factor ``step`` steps after the warm-up, of ``steps``:
    1 for the first ``ARCH_LR_HOLD`` of them (so that a short search reaches its target
    before the rate falls), then a cosine to 0 (so that the decisions settle)."""
    hold = ARCH_LR_HOLD * steps
    t = (max(0, step) - hold) / max(1.0, steps - hold)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))


def make_optimizers(supernet: Supernet, cfg: SearchConfig) -> tuple:
    """SGD (Nesterov) or RMSprop on the weights; Adam (or SGD) on the thresholds; their schedules."""
    w_opt = make_optimizer(supernet.weight_parameters(), cfg)
    arch = supernet.arch_parameters()
    a_opt = (SharedAdam(arch, lr=cfg.arch_lr) if cfg.arch_optimizer == "shared-adam"
             else torch.optim.Adam(arch, lr=cfg.arch_lr) if cfg.arch_optimizer == "adam"
             else torch.optim.SGD(arch, lr=cfg.arch_lr, momentum=0.9))
    w_sched = cosine_with_warmup(w_opt, min(cfg.warmup_steps, 20), cfg.steps)
    a_sched = torch.optim.lr_scheduler.LambdaLR(a_opt, lambda s: arch_lr_factor(s, cfg.steps - cfg.warmup_steps))
    return w_opt, a_opt, w_sched, a_sched


def step_target(step: int, cfg: SearchConfig, largest: float) -> float:
    """The cost the search pulls toward at ``step``: ``cfg.target``, or with ``cfg.target_ramp``
    a target that falls geometrically from ``largest`` (the largest sub-network's cost) to
    ``cfg.target`` over that share of the steps after the warm-up, so that the cost is near its
    current target throughout and the gates give way one by one, instead of all together while
    the cost is far above the target."""
    if cfg.target_ramp <= 0 or largest <= cfg.target:
        return cfg.target
    done = (step - cfg.warmup_steps) / (cfg.target_ramp * (cfg.steps - cfg.warmup_steps))
    return cfg.target * (largest / cfg.target) ** (1.0 - min(1.0, max(0.0, done)))


def search_step(supernet: Supernet, model: nn.Module, opts: tuple, x: torch.Tensor, y: torch.Tensor,
                warm: bool, cfg: SearchConfig, ce_fn: nn.Module, target: float | None = None) -> tuple:
    """One step: during warm-up the weights only, with every option on (or, with
    ``cfg.warmup_drop``, a random sub-network: each gate off with that probability), else the
    selected path, with the cost term, updating weights and thresholds (with ``cfg.sandwich``
    the weights' gradient also holds the largest and a random sub-network's). Returns (loss,
    ce, macs, logits).

    Nothing is read back to the host: gates, decisions and cost stay on the device (a loss
    that is not finite is caught by the loop at its next logged step or checkpoint, and the
    run stops there without saving)."""
    w_opt, a_opt, w_sched, a_sched = opts
    supernet.train()
    w_opt.zero_grad(set_to_none=True)
    a_opt.zero_grad(set_to_none=True)
    if not warm and cfg.sandwich:
        # weights only: forced gates give the thresholds no gradient; the selected path runs
        # last, since the cost term reads the gates of the latest forward pass
        for pick in (supernet.force_all_on, lambda: supernet.force_random(0.5)):
            pick()
            with autocast(x.device):
                extra = model(x)
            ce_fn(extra.float(), y).backward()
    if not warm:
        supernet.force(None)
    elif cfg.warmup_drop > 0:
        supernet.force_random(cfg.warmup_drop)
    else:
        supernet.force_all_on()
    with autocast(x.device):
        logits = model(x)
    ce = ce_fn(logits.float(), y)
    macs = supernet.cost()
    loss = ce if warm else ce + cfg.lam * torch.log(macs / (target or cfg.target)).abs()
    loss.backward()
    w_opt.step()
    w_sched.step()
    if not warm:
        a_opt.step()
        a_sched.step()
    return loss, ce, macs, logits


def search(graph: Graph | None, cfg: SearchConfig | None, out: str | Path, resume: bool = False,
           progress: bool = True, overrides: dict | None = None, note: str | None = None) -> dict:
    """Search ``graph`` (a relaxed graph) toward ``cfg.target`` (MACs, or milliseconds predicted
    by ``cfg.latency_table``); return the result summary.
    Rank 0, the one that writes ``out``, holds its lock (:mod:`autonl.backends.locks`) throughout.
    ``overrides``: runtime settings a resumed run changes (:data:`~.loop.RUNTIME_SETTINGS`).
    ``note``: a line printed (rank 0) once the data has been read, e.g. how the settings were fitted."""
    rank, world = distributed()
    if world > 1:
        die_with_parent()     # a worker of a torchrun agent that is killed stops with it
    with output_lock(out, "search", enabled=rank == 0):
        return _search(graph, cfg, out, resume, progress, rank, world, overrides, note)


def _search(graph: Graph | None, cfg: SearchConfig | None, out: str | Path, resume: bool, progress: bool,
            rank: int, world: int, overrides: dict | None = None, note: str | None = None) -> dict:
    run, ckpt, graph, cfg = open_run(out, resume, "search", "search_graph.json", SearchConfig, graph, cfg,
                                     overrides)
    if graph is None or cfg is None:
        raise AutonlError("search needs a relaxed graph and a config (or resume=True with a run folder)")
    if not graph.relaxed:
        raise AutonlError(f"graph '{graph.name}' has no choices to search; give it choices first (passes insert-lightnl, make-choices)")
    device, table, supernet, train_loader, val_loader = _parts(graph, cfg, rank, world)
    if note and rank == 0:
        print(note, file=sys.stderr, flush=True)

    memory = memory_format(cfg.channels_last)
    supernet.to(device, memory_format=memory)
    model: nn.Module = supernet
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            supernet, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    if cfg.compile:
        model = torch.compile(model)
    opts = make_optimizers(supernet, cfg)
    w_opt, a_opt, w_sched, a_sched = opts
    loop = Loop(run, "search", graph, cfg,
                {"model": supernet, "w_opt": w_opt, "a_opt": a_opt, "w_sched": w_sched, "a_sched": a_sched},
                graph_stem="search_graph", config_file="search_config.json", logs=("metrics.jsonl", "trace.jsonl"),
                extra_state=lambda: {"decisions": supernet.decisions(), "world": world}, rank=rank)
    loop.start(ckpt)
    if ckpt is not None and ckpt.get("world", 1) != world and rank == 0:
        # replicated state (weights, thresholds, optimisers, schedules, step) carries over
        # whole; only the data each step sees changes with the number of shards
        tqdm.write(f"note: resuming a search checkpointed by {ckpt.get('world', 1)} process(es) on {world}: "
                   f"weights, thresholds, optimiser states and the step count carry over; from step {loop.step} "
                   f"each step reads {world} x {cfg.batch_size} images in another order, so the result will not "
                   f"be identical to an uninterrupted run on {ckpt.get('world', 1)}", file=sys.stderr)
    gate_names = [f"{r.node}.{r.attr}" for r in supernet.gate_refs]
    ce_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    largest = supernet.cost_model.bounds()[1]

    def step(i, x, y):
        warm = i < cfg.warmup_steps
        loss, ce, macs, logits = search_step(supernet, model, opts, x.contiguous(memory_format=memory), y, warm,
                                             cfg, ce_fn, step_target(i, cfg, largest))
        return StepResult(loss, logits, {"ce": ce, "cost": macs, "warm": warm})

    def row(i, epoch, result, window):
        warm = result.extra["warm"]
        cost_key = "latency_ms" if cfg.unit == "ms" else "macs"
        metrics = {"step": i, "loss": result.loss.item(), "ce": result.extra["ce"].item(),
                   "train_acc": window.accuracy(), cost_key: result.extra["cost"].item(), "warmup": warm,
                   "lr": w_sched.get_last_lr()[0], "arch_lr": a_sched.get_last_lr()[0]}
        if cfg.target_ramp > 0:
            metrics["step_target"] = step_target(i, cfg, largest)
        run.log({"step": i, "gates": {f"{r.node}.{r.attr}": r.gate.state() for r in supernet.gate_refs}},
                "trace.jsonl")
        return metrics, {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['train_acc']:.2f}",
                         **({"ms": f"{metrics['latency_ms']:.2f}"} if cfg.unit == "ms" else
                            {"MACs": format_count(metrics["macs"])}), "warm": "yes" if warm else "no"}

    loop.run_steps(train_loader, device, step, row,
                   after_checkpoint=lambda: plot_search(run, cfg.target, gate_names, cfg.unit), progress=progress)
    return finish(supernet, graph, cfg, run, train_loader, val_loader, device, rank, world, loop.step, table)


def _parts(graph: Graph, cfg: SearchConfig, rank: int, world: int) -> tuple:
    """A search's device, latency table, supernet and data loaders (checked against the graph):
    ``(device, table, supernet, train_loader, val_loader)``."""
    from ..data import make_loaders

    seed_all(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    table = latency_table(cfg)
    cost_res = cost_resolution(cfg, table)
    cost_graph = resize_graph(graph, cost_res) if cost_res else None
    supernet = Supernet(graph, tau=cfg.tau, cost_graph=cost_graph, latency=table)
    check_target(supernet, cfg.target)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    train_loader, val_loader, classes = make_loaders(
        cfg.data, resolution=resolution, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
        skip_corrupt=cfg.skip_corrupt, train_size=cfg.train_size, val_size=cfg.val_size, shard=(rank, world),
        holdout=cfg.holdout, crop_scale=cfg.crop_scale, flip=cfg.flip, eval_crop=cfg.eval_crop)
    out_classes = graph.type_of(graph.outputs[0]).shape[-1]
    if out_classes != classes:
        raise AutonlError(f"graph '{graph.name}' predicts {out_classes} classes but '{cfg.data}' has {classes}")
    if len(train_loader) == 0:
        raise AutonlError(f"the training set of '{cfg.data}' is empty or smaller than one batch ({cfg.batch_size})")
    return device, table, supernet, train_loader, val_loader


def latency_table(cfg: SearchConfig):
    """The search's latency table (None for a MAC target), read and checked (schema; fit to the
    space comes when the supernet's cost is made)."""
    if cfg.latency_table is None:
        return None
    from autonl.backends.latency import LatencyTable
    return LatencyTable.read(cfg.latency_table)


def cost_resolution(cfg: SearchConfig, table) -> int | None:
    """The resolution the cost is counted at: ``cfg.cost_resolution``, or the latency table's."""
    if table is None:
        return cfg.cost_resolution
    if cfg.cost_resolution is not None and cfg.cost_resolution != table.resolution:
        raise AutonlError(f"--cost-resolution {cfg.cost_resolution}, but {table.path} was measured at "
                          f"{table.resolution}x{table.resolution}; leave --cost-resolution out (a latency table sets it)")
    return table.resolution


def _fmt_cost(value: float, unit: str) -> str:
    return f"{value:.3f} ms" if unit == "ms" else f"{format_count(value)} MACs"


def _land(supernet: Supernet, decisions: dict, chosen: float, cfg: SearchConfig, train_loader, val_loader,
          device) -> tuple[dict, list, list | None, list | None]:
    """The thresholds' ``decisions`` brought within the landing tolerance of the target (margin
    or measured) and, with ``cfg.candidates``, the best landing candidate: ``(decisions,
    flipped, landing_rows, candidates)``."""
    landing_rows = None
    if cfg.landing == "measured":
        score_loader = val_loader if cfg.holdout else train_loader    # never the validation split
        decisions, flipped, landing_rows = land_measured(supernet, decisions, cfg.target, train_loader,
                                                         score_loader, device)
        landing_rows = landing_rows or None       # null when nothing was measured, as with margin
    else:
        decisions, flipped = land(supernet, decisions, cfg.target)
    if flipped:
        unit = "ms" if cfg.unit == "ms" else "MACs"
        landed = supernet.cost_of(decisions)
        print(f"note: the thresholds chose {_fmt_cost(chosen, unit)} ({chosen / cfg.target - 1:+.0%} off the target); "
              + (f"of the {len(landing_rows)} least decided single flips that land, the one the supernet "
                 f"measured best was kept ({_fmt_cost(landed, unit)}): " if landing_rows else
                 f"the {len(flipped)} least decided gate(s) flipped to land at {_fmt_cost(landed, unit)}: ")
              + f"{'; '.join(flipped[:6])}" + (f"; and {len(flipped) - 6} more (result.json: landing_flips)"
                                             if len(flipped) > 6 else ""), file=sys.stderr)
    candidates = None
    if cfg.candidates > 1:
        decisions, candidates = choose(supernet, decisions, cfg.target, cfg.candidates, cfg.seed, train_loader,
                                       val_loader, device, cfg.holdout)
    return decisions, flipped, landing_rows, candidates


def finish(supernet: Supernet, graph: Graph, cfg: SearchConfig, run: Run, train_loader, val_loader, device,
           rank: int, world: int, step: int, table=None) -> dict:
    from autonl.passes import analyze_cost
    from autonl.passes.derive import Derive

    supernet.force(None)
    supernet.eval()
    with torch.no_grad():
        supernet(next(iter(val_loader))[0][:2].to(device))  # refresh gate states for the decisions
    decisions = supernet.decisions()
    if world > 1:
        # gathered on rank 0, which alone writes (the other ranks may be on machines that do
        # not see --out): one file per rank, and a clear line if any rank disagrees
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(decisions, gathered, dst=0)
        if rank != 0:
            return {}
        for r, theirs in enumerate(gathered):
            atomic_write(run.folder / f"decisions.rank{r}.json", dumps_decisions(theirs))
        differ = [r for r, theirs in enumerate(gathered) if theirs != decisions]
        if differ:
            raise AutonlError(f"ranks {differ} ended with other decisions than rank 0 (see decisions.rankN.json in "
                              f"{run.folder}); the gates should be identical on every rank")
    if rank != 0:
        return {}
    chosen = supernet.cost_of(decisions)
    decisions, flipped, landing_rows, candidates = _land(supernet, decisions, chosen, cfg, train_loader, val_loader,
                                                         device)
    supernet.force(decisions)
    derived = Derive(decisions)(graph).graph
    recalibrate_bn(supernet, train_loader, device)  # the chosen path's own BN statistics
    val = evaluate(supernet, val_loader, device)
    cost_res = cost_resolution(cfg, table)
    macs = analyze_cost(resize_graph(derived, cost_res) if cost_res else derived).macs
    result = {"step": step, "target_macs": cfg.target_macs, "derived_macs": macs,
              "cost_resolution": cost_res or graph.inputs[next(iter(graph.inputs))].shape[-1],
              "thresholds_cost": chosen, "landing_flips": flipped, "landing_candidates": landing_rows,
              "candidates": candidates,
              "supernet_val_acc": val["val_acc"],
              "supernet_val_on": (f"{cfg.holdout} held-out training images" if cfg.holdout else
                                  "the validation split"),
              "lightnl_blocks": sum(1 for n in derived if n.op == "lightnl"),
              "lightnl_at": [n.name for n in derived if n.op == "lightnl"],
              "blocks": sum(1 for n in derived if n.op == "mbconv")}
    if table is not None:
        predicted = table.predict(resize_graph(graph, table.resolution), decisions)
        result.update({"target_latency_ms": cfg.target_latency_ms, "predicted_latency_ms": predicted,
                       "latency_table": str(cfg.latency_table), "latency_of": table.describe(),
                       "off_target": predicted / cfg.target_latency_ms - 1})
        achieved = f"a predicted latency of {predicted:.3f} ms"
        wanted = f"{cfg.target_latency_ms:.3f} ms"
    else:
        result["off_target"] = macs / cfg.target_macs - 1
        achieved, wanted = f"{format_count(macs)} MACs", format_count(cfg.target_macs)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    atomic_write(run.folder / DATA_FACTS_FILE, json.dumps(data_facts(
        cfg.data, resolution, augmentation(cfg.data, cfg.crop_scale, cfg.flip, cfg.eval_crop)), indent=1) + "\n")
    if abs(result["off_target"]) > LANDING_TOLERANCE:
        result["landing_warning"] = (
            f"warning: the derived network has {achieved}, {result['off_target']:+.0%} off the target "
            f"{wanted} (more than ±{LANDING_TOLERANCE:.0%}); search longer (--steps), or "
            f"raise --lambda or --arch-lr")
        print(result["landing_warning"], file=sys.stderr)
    atomic_write(run.folder / "decisions.json", dumps_decisions(decisions))
    atomic_write(run.folder / "result.json", json.dumps(result, indent=1) + "\n")
    from autonl.backends.manifest import write_run_manifest
    write_run_manifest(run.folder, "search", asdict(cfg), cfg.seed)
    return result
