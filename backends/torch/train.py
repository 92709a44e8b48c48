"""Training and evaluation of a discrete graph, with exact resume.

Before each evaluation the BN statistics are re-estimated on ``precise_bn`` training
batches ("precise BN"): with the AutoNL presets' BN momentum of 0.01 the running averages
lag far behind the weights in a short run (and inherited supernet statistics belong to other
sub-networks), which made evaluation meaningless. ``precise_bn=0`` keeps the running averages.

One run directory holds everything: ``config.json``, the graph (``graph.json``/``graph.ir``),
``checkpoint.pt`` (model, optimiser, scheduler, step, RNG states; written to a temporary
name and renamed), ``metrics.jsonl`` (one JSON object per logged step and per evaluation),
``curves.png`` (loss and accuracy against step) and, at the end, ``model/`` (graph + weights).

Determinism: the data of epoch ``e`` is a function of (seed, e) (the loader's generator is
reseeded at every epoch start), so a resumed run replays the rest of the interrupted epoch
and continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from autonl.ir import AutonlError, Graph
from autonl.ir.io import atomic_write, load_graph, render

from .lower import to_torch
from .weights import check_state_dict, load_weights, read_torch_file, save_model, torch_bytes

CHECKPOINT_FORMAT = "autonl-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    data: str = "digits"
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"          # sgd (Nesterov momentum 0.9) or rmsprop (TF-style, as MnasNet)
    weight_decay: float = 4e-5
    warmup_steps: int = 20
    label_smoothing: float = 0.1
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    train_size: int | None = None
    val_size: int | None = None
    skip_corrupt: bool = False
    precise_bn: int = 20               # batches to re-estimate BN statistics before each evaluation

    def __post_init__(self):
        if self.optimizer not in ("sgd", "rmsprop"):
            raise AutonlError(f"unknown optimizer '{self.optimizer}'; known optimizers: rmsprop, sgd")
        for name in ("steps", "batch_size", "eval_every", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AutonlError(f"--{name.replace('_', '-')} must be at least 1")
        if not (self.lr > 0 and 0 <= self.label_smoothing < 1 and self.warmup_steps >= 0):
            raise AutonlError("need lr > 0, 0 <= label smoothing < 1 and warm-up steps >= 0")

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        known = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AutonlError(f"device '{name}' asked for, but this machine has no CUDA GPU")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AutonlError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=cfg.weight_decay)


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr/warmup to lr over ``warmup`` steps, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(device: torch.device):
    """bf16 mixed precision on GPU (no loss scaling needed); full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def epoch_batches(loader, epoch: int, skip: int = 0) -> Iterator:
    """The batches of ``epoch``: order and augmentation depend on (seed, epoch) only."""
    loader.sampler.set_epoch(epoch)
    for i, batch in enumerate(loader):
        if i >= skip:
            yield batch


@torch.no_grad()
def evaluate(module: nn.Module, loader, device: torch.device, label_smoothing: float = 0.0) -> dict:
    module.eval()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="sum")
    total, correct, loss, nonfinite = 0, 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            logits = module(x).float()
        # An image whose logits overflow counts as wrong and is kept out of the mean loss;
        # the count is reported (LightNL is cubic in its input: outliers can overflow fp32).
        ok = torch.isfinite(logits).all(1)
        nonfinite += int((~ok).sum())
        if ok.any():
            loss += loss_fn(logits[ok], y[ok]).item()
        correct += (logits.argmax(1)[ok] == y[ok]).sum().item()
        total += y.numel()
    if total == 0:
        raise AutonlError("the validation set is empty")
    out = {"val_loss": loss / max(1, total - nonfinite), "val_acc": correct / total, "val_n": total}
    if nonfinite:
        out["val_nonfinite"] = nonfinite
    return out


@torch.no_grad()
def recalibrate_bn(module: nn.Module, loader, device: torch.device, batches: int = 20) -> None:
    """Re-estimate every BN's running statistics on training batches (a cumulative average).

    A supernet's running statistics mix many sub-networks; evaluating one path needs its own.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    # dropout draws from the global generator: keep it untouched so a resumed run stays exact
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            module(x.to(device, non_blocking=True))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    module.eval()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: Path) -> dict:
    ckpt = read_torch_file(path, "checkpoint")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AutonlError(f"{path}: not an autonl checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise AutonlError(f"{path}: checkpoint version {ckpt.get('version')} is not supported")
    return ckpt


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
        ax1.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
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


class Run:
    """A run directory: paths and the append-only metrics log."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.checkpoint = self.folder / "checkpoint.pt"
        self.metrics = self.folder / "metrics.jsonl"
        self.curves = self.folder / "curves.png"
        self.config = self.folder / "config.json"

    def start(self, resume: bool, kind: str) -> dict | None:
        """The checkpoint to resume (of ``kind``: train or search), or None for a new run;
        a new run never overwrites an earlier one."""
        if not resume:
            if self.checkpoint.exists():
                raise AutonlError(f"{self.folder} already holds a run; pass --resume to continue it or pick "
                                  "another --out")
            return None
        if not self.checkpoint.exists():
            raise AutonlError(f"{self.folder}: nothing to resume (no checkpoint.pt)")
        ckpt = read_checkpoint(self.checkpoint)
        found = ckpt.get("kind", "train")
        if found != kind:
            raise AutonlError(f"{self.checkpoint}: a {found} checkpoint, not a {kind} one; "
                              f"use autonl {found} --resume")
        return ckpt

    def log(self, row: dict, name: str = "metrics.jsonl") -> None:
        with (self.folder / name).open("a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate(self, step: int, name: str = "metrics.jsonl") -> None:
        """Drop rows after ``step`` (written by a run that died after its last checkpoint)."""
        path = self.folder / name
        if path.exists():
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            atomic_write(path, "".join(line + "\n" for line in keep))


def train(graph: Graph | None, cfg: TrainConfig, out: str | Path, resume: bool = False,
          init: str | Path | None = None, progress: bool = True) -> dict:
    """Train ``graph`` (or, with ``resume``, the run in ``out``); return the final metrics."""
    from .data import make_loaders

    run = Run(Path(out))
    ckpt = run.start(resume, "train")
    if ckpt is not None:
        graph = load_graph(run.folder / "graph.json")
        cfg = TrainConfig.from_dict(ckpt["config"])  # a resumed run keeps its own settings
    if graph is None:
        raise AutonlError("train needs a graph (or resume=True with a run folder)")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = pick_device(cfg.device)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    train_loader, val_loader, num_classes = make_loaders(
        cfg.data, resolution=resolution, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
        skip_corrupt=cfg.skip_corrupt, train_size=cfg.train_size, val_size=cfg.val_size)
    out_classes = graph.type_of(graph.outputs[0]).shape[-1]
    if out_classes != num_classes:
        raise AutonlError(f"graph '{graph.name}' predicts {out_classes} classes but the data "
                          f"'{cfg.data}' has {num_classes}")
    if len(train_loader) == 0:
        raise AutonlError(f"the training set of '{cfg.data}' has fewer samples than one batch ({cfg.batch_size})")

    module = to_torch(graph).to(device)
    if init is not None:
        load_weights(module, Path(init) / "weights.pt" if Path(init).is_dir() else init, graph.name)
    optimizer = make_optimizer(module.parameters(), cfg)
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    step = 0
    if ckpt is not None:
        check_state_dict(ckpt["model"], module, str(run.checkpoint), graph.name)
        module.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step = ckpt["step"]
        set_rng_state(ckpt["rng"])
        run.truncate(step)
    else:
        run.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(run.folder / "graph.json", render(graph, "json"))
        atomic_write(run.folder / "graph.ir", render(graph, "text"))
    atomic_write(run.config, json.dumps(asdict(cfg), indent=1) + "\n")

    def save_checkpoint() -> None:
        atomic_write(run.checkpoint, torch_bytes({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "train", "step": step,
            "model": module.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "config": asdict(cfg)}))

    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    per_epoch = len(train_loader)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {graph.name}", unit="step",
               disable=not progress, dynamic_ncols=True)
    last_val: dict = {}
    seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        for x, y in epoch_batches(train_loader, epoch, skip):
            module.train()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device):
                logits = module(x)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise AutonlError(f"the loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            seen += y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * y.numel()
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                       "lr": scheduler.get_last_lr()[0], "images_per_s": seen / (time.perf_counter() - t0)}
                run.log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.3f}", **(
                    {"val": f"{last_val['val_acc']:.3f}"} if last_val else {}))
                seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                if cfg.precise_bn:
                    recalibrate_bn(module, train_loader, device, cfg.precise_bn)
                last_val = evaluate(module, val_loader, device)
                run.log({"step": step, **last_val})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint()
                plot_curves(run.metrics, run.curves)
            if step >= cfg.steps:
                break
    bar.close()
    save_model(graph, module.cpu().eval(), run.folder / "model")
    result = {"step": step, **last_val}
    atomic_write(run.folder / "result.json", json.dumps(result, indent=1) + "\n")
    from autonl.backends.deploy import write_run_manifest
    write_run_manifest(run.folder, "train", asdict(cfg), cfg.seed)
    return result
