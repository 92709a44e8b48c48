"""Training and evaluation of a discrete graph, with exact resume.

Before each evaluation the BN statistics are re-estimated on ``precise_bn`` training
batches ("precise BN"): with the AutoNL presets' BN momentum of 0.01 the running averages
lag far behind the weights in a short run (and inherited supernet statistics belong to other
sub-networks), which made evaluation meaningless. ``precise_bn=0`` keeps the running averages.

One run directory holds everything: ``config.json``, the graph (``graph.json``/``graph.ir``),
``checkpoint.pt`` (model, optimiser, scheduler, step, RNG states; written to a temporary
name and renamed), ``metrics.jsonl`` (one JSON object per logged step and per evaluation),
``curves.png`` (loss and accuracy against step) and, at the end, ``model/`` (graph + weights).

The run folder, the loop and the checkpoint format are those of :mod:`.loop` and
:mod:`.checkpoint`, shared with the search; a resumed run continues exactly as an
uninterrupted one would (see :mod:`.loop`).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from autonl.ir import AutonlError, Graph, atomic_write

from ...locks import output_lock
from .checkpoint import read_checkpoint
from ..config import TrainConfig
from ..device import autocast, memory_format, pick_device
from .evaluation import evaluate, recalibrate_bn
from ..data import augmentation, data_facts
from .loop import Loop, StepResult, cosine_with_warmup, make_optimizer, open_run, seed_all
from ..lower import to_torch
from .weights import load_weights, save_model

# evaluate, pick_device and read_checkpoint are defined in the shared modules; other code
# imports them from here
__all__ = ["TrainConfig", "evaluate", "make_optimizer", "pick_device", "plot_curves", "read_checkpoint", "train",
           "train_step"]


def train_step(module: nn.Module, optimizer, scheduler, x: torch.Tensor, y: torch.Tensor,
               loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step on a batch; returns (loss, logits). The optimiser is not stepped
    when the loss is not finite."""
    module.train()
    with autocast(x.device):
        logits = module(x)
        loss = loss_fn(logits.float(), y)
    if not torch.isfinite(loss):
        return loss, logits
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss, logits


def plot_curves(metrics_path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_path.exists():
        return
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_acc" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if val:
        ax1.plot([r["step"] for r in val], [math.nan if r["val_loss"] is None else r["val_loss"] for r in val], "o-",
                 label="val loss")      # null: no image had finite logits
    losses = [r["loss"] for r in train] + [r["val_loss"] for r in val]
    finite = [v for v in losses if v is not None and math.isfinite(v) and v > 0]
    # a log axis keeps one bad value (say 1e29) from flattening the rest of the curve
    if finite and max(finite) / min(finite) > 100:
        ax1.set_yscale("log")
    ax1.set_xlabel("step"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot([r["step"] for r in train], [r["train_acc"] for r in train], label="train accuracy")
    if val:
        ax2.plot([r["step"] for r in val], [r["val_acc"] for r in val], "o-", label="val accuracy")
    ax2.set_xlabel("step"), ax2.set_ylabel("accuracy"), ax2.set_ylim(0, 1), ax2.legend(), ax2.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)


def train(graph: Graph | None, cfg: TrainConfig, out: str | Path, resume: bool = False,
          init: str | Path | None = None, progress: bool = True, overrides: dict | None = None,
          note: str | None = None) -> dict:
    """Train ``graph`` (or, with ``resume``, the run in ``out``); return the final metrics. The
    lock of ``out`` (:mod:`autonl.backends.locks`) is held throughout. ``overrides``: runtime
    settings a resumed run changes (:data:`~.loop.RUNTIME_SETTINGS`). ``note``: a line printed
    once the data has been read, e.g. how the settings were fitted."""
    with output_lock(out, "train"):
        return _train(graph, cfg, out, resume, init, progress, overrides, note)


def _train(graph: Graph | None, cfg: TrainConfig, out: str | Path, resume: bool, init: str | Path | None,
           progress: bool, overrides: dict | None = None, note: str | None = None) -> dict:
    from ..data import make_loaders

    run, ckpt, graph, cfg = open_run(out, resume, "train", "graph.json", TrainConfig, graph, cfg, overrides)
    if graph is None:
        raise AutonlError("train needs a graph (or resume=True with a run folder)")
    seed_all(cfg.seed)
    device = pick_device(cfg.device)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    train_loader, val_loader, num_classes = make_loaders(
        cfg.data, resolution=resolution, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
        skip_corrupt=cfg.skip_corrupt, train_size=cfg.train_size, val_size=cfg.val_size,
        crop_scale=cfg.crop_scale, flip=cfg.flip, eval_crop=cfg.eval_crop)
    out_classes = graph.type_of(graph.outputs[0]).shape[-1]
    if out_classes != num_classes:
        raise AutonlError(f"graph '{graph.name}' predicts {out_classes} classes but the data "
                          f"'{cfg.data}' has {num_classes}")
    if len(train_loader) == 0:
        raise AutonlError(f"the training set of '{cfg.data}' has fewer samples than one batch ({cfg.batch_size})")
    if note:
        print(note, file=sys.stderr, flush=True)

    memory = memory_format(cfg.channels_last)
    module = to_torch(graph).to(device, memory_format=memory)
    if init is not None:
        load_weights(module, Path(init) / "weights.pt" if Path(init).is_dir() else init, graph.name)
    optimizer = make_optimizer(module.parameters(), cfg)
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    loop = Loop(run, "train", graph, cfg, {"model": module, "optimizer": optimizer, "scheduler": scheduler})
    loop.start(ckpt)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def step(i, x, y):
        if x.dim() == 4:
            x = x.contiguous(memory_format=memory)
        return StepResult(*train_step(module, optimizer, scheduler, x, y, loss_fn))

    def row(i, epoch, result, window):
        metrics = {"step": i, "epoch": epoch, "loss": window.mean_loss(),
                   "train_acc": window.accuracy(), "lr": scheduler.get_last_lr()[0],
                   "images_per_s": window.seen / (time.perf_counter() - window.t0)}
        return metrics, {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['train_acc']:.3f}"}

    def validate():
        if cfg.precise_bn:
            recalibrate_bn(module, train_loader, device, cfg.precise_bn)
        return evaluate(module, val_loader, device)

    last_val = loop.run_steps(train_loader, device, step, row, evaluate=validate,
                              after_checkpoint=lambda: plot_curves(run.metrics, run.curves), progress=progress)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    aug = augmentation(cfg.data, cfg.crop_scale, cfg.flip, cfg.eval_crop)
    save_model(graph, module.cpu().to(memory_format=torch.contiguous_format).eval(), run.folder / "model",
               data_facts(cfg.data, resolution, aug))
    result = {"step": loop.step, **last_val}
    atomic_write(run.folder / "result.json", json.dumps(result, indent=1) + "\n")
    from autonl.backends.manifest import write_run_manifest
    write_run_manifest(run.folder, "train", asdict(cfg), cfg.seed)
    return result
