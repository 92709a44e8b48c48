"""The run loop that train and search share, in one run folder, with exact resume.

A run folder holds the graph (``graph.json``/``.ir`` or ``search_graph.json``/``.ir``), the
settings (``config.json`` or ``search_config.json``), ``checkpoint.pt`` (see
:mod:`.checkpoint`) and ``metrics.jsonl`` (one JSON object per logged step and per
evaluation), plus what each kind adds. :class:`Loop` is the skeleton: start or resume the run,
step through the batches epoch by epoch, log every ``log_every`` steps, evaluate every
``eval_every`` steps, checkpoint every ``checkpoint_every`` steps and at the end, show a
progress bar. The kind supplies the step and the metrics row; both build on the pieces here
(seeding, the warm-up + cosine LR schedule, the batches of an epoch).

Determinism: the data of epoch ``e`` is a function of (seed, e) (:func:`epoch_batches`), and a
checkpoint holds every RNG state, so a resumed run replays the rest of the interrupted epoch
and continues exactly as an uninterrupted one would; log rows written after the last
checkpoint by a run that died are dropped on resume.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
from tqdm.auto import tqdm

from autonl.ir import AutonlError, Graph, atomic_write, load_graph, render

from ... import interrupts
from ...cpu import FreeCores, threads_line
from .checkpoint import read_checkpoint, restore_checkpoint, write_checkpoint
from ..config import RUNTIME_SETTINGS

__all__ = ["Loop", "NonFinite", "RUNTIME_SETTINGS", "Run", "StepResult", "Window", "cosine_with_warmup", "epoch_batches", "open_run", "seed_all"]


def seed_all(seed: int) -> None:
    """Seed the torch and Python generators (model initialisation, dropout)."""
    torch.manual_seed(seed)
    random.seed(seed)


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """The weights' optimizer of a training or search config (its ``optimizer``, ``lr`` and
    ``weight_decay``): SGD with Nesterov momentum, or TF-style RMSprop."""
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


def epoch_batches(loader, epoch: int, skip: int = 0) -> Iterator:
    """The batches of ``epoch``: order and augmentation depend on (seed, epoch) only."""
    loader.sampler.set_epoch(epoch)
    for i, batch in enumerate(loader):
        if i >= skip:
            yield batch


class Run:
    """A run directory: paths and the append-only metrics log."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.checkpoint = self.folder / "checkpoint.pt"
        self.metrics = self.folder / "metrics.jsonl"
        self.curves = self.folder / "curves.png"

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




def open_run(out: str | Path, resume: bool, kind: str, graph_file: str, config_type, graph, cfg,
             overrides: dict | None = None) -> tuple:
    """``(run, checkpoint or None, graph, cfg)``; a resumed run keeps its own graph (read from
    ``graph_file`` in its folder) and its own settings (from its checkpoint), but for the
    :data:`RUNTIME_SETTINGS` in ``overrides``."""
    run = Run(Path(out))
    ckpt = run.start(resume, kind)
    if ckpt is not None:
        graph = load_graph(run.folder / graph_file)
        saved = dict(ckpt["config"])
        for name, value in (overrides or {}).items():
            if name not in RUNTIME_SETTINGS:
                raise AutonlError(f"a resumed run keeps its {name}; only {', '.join(RUNTIME_SETTINGS)} may change")
            saved[name] = value
        cfg = config_type.from_dict(saved)
    return run, ckpt, graph, cfg


class StepResult(NamedTuple):
    """What a step callback returns: the loss (the loop stops on a non-finite one), the
    logits (for the training accuracy) and anything else the kind logs."""
    loss: torch.Tensor
    logits: torch.Tensor
    extra: dict = {}


class Window:
    """Totals over the steps since the last logged one, kept on the device: adding a step
    reads nothing back to the host (no synchronisation); :meth:`accuracy` and
    :meth:`mean_loss` do, when a row is logged."""

    def __init__(self):
        self.seen = 0
        self.correct: torch.Tensor | int = 0
        self.loss_sum: torch.Tensor | float = 0.0
        self.t0 = time.perf_counter()

    def add(self, result: StepResult, y: torch.Tensor) -> None:
        self.seen += y.numel()
        self.correct = self.correct + (result.logits.detach().argmax(1) == y).sum()
        self.loss_sum = self.loss_sum + result.loss.detach().float() * y.numel()

    def accuracy(self) -> float:
        return float(self.correct) / max(1, self.seen)

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(1, self.seen)


class NonFinite:
    """Watches the loss for inf/NaN without reading it every step: the first bad step is kept
    on the device and :meth:`check` (at each logged step and before each checkpoint) reads it."""

    def __init__(self):
        self.first: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def add(self, step: int, loss: torch.Tensor) -> None:
        loss = loss.detach().float()
        if self.first is None:
            self.first = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.loss = torch.zeros((), device=loss.device)
        new = (self.first < 0) & ~torch.isfinite(loss)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.loss = torch.where(new, loss, self.loss)

    def check(self) -> None:
        if self.first is not None and int(self.first) >= 0:
            raise AutonlError(f"the loss became {float(self.loss)} at step {int(self.first)}: the logits overflowed "
                              f"or the weights diverged, so the run stopped (its folder keeps the last checkpoint, "
                              f"if any). Lower --lr, or "
                              f"use LightNL blocks with norm=\"l2\" (the paper's product is cubic in its input)")


class Loop:
    """One kind of run (``train`` or ``search``) in ``run``: its checkpointed state and its steps.

    ``parts`` names what the checkpoint holds (``model`` first, checked against ``graph`` on
    resume, then optimisers and schedulers); ``extra_state()`` adds what the kind saves beside
    them. ``cfg`` is the kind's settings (a dataclass with ``steps``, ``log_every``,
    ``checkpoint_every`` and, when it evaluates, ``eval_every``). Under torchrun only rank 0
    writes files.
    """

    def __init__(self, run: Run, kind: str, graph: Graph, cfg, parts: dict, *, graph_stem: str = "graph",
                 config_file: str = "config.json", logs: tuple[str, ...] = ("metrics.jsonl",),
                 extra_state: Callable[[], dict] | None = None, rank: int = 0):
        self.run, self.kind, self.graph, self.cfg, self.parts = run, kind, graph, cfg, parts
        self.graph_stem, self.config_file, self.logs = graph_stem, config_file, logs
        self.extra_state, self.rank, self.step = extra_state or dict, rank, 0

    def start(self, ckpt: dict | None) -> None:
        """Resume from ``ckpt`` (restore every part and RNG, drop log rows past its step), or
        write a new run's graph; then write the settings."""
        if ckpt is not None:
            self.step = restore_checkpoint(ckpt, self.parts, str(self.run.checkpoint), self.graph.name)
            if self.rank == 0:
                for name in self.logs:
                    self.run.truncate(self.step, name)
        elif self.rank == 0:
            self.run.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run.folder / f"{self.graph_stem}.json", render(self.graph, "json"))
            atomic_write(self.run.folder / f"{self.graph_stem}.ir", render(self.graph, "text"))
        if self.rank == 0:
            atomic_write(self.run.folder / self.config_file, json.dumps(asdict(self.cfg), indent=1) + "\n")

    def save(self) -> None:
        if self.rank == 0:
            write_checkpoint(self.run.checkpoint, self.kind, self.step, self.parts, asdict(self.cfg),
                             self.extra_state())

    def run_steps(self, loader, device: torch.device, step: Callable[[int, torch.Tensor, torch.Tensor], StepResult],
                  row: Callable[[int, int, StepResult, Window], tuple[dict, dict]], *,
                  evaluate: Callable[[], dict] | None = None, after_checkpoint: Callable[[], None] | None = None,
                  progress: bool = True) -> dict:
        """Step until ``cfg.steps``; return the last evaluation (``{}`` without ``evaluate``).

        ``step(i, x, y)`` makes optimisation step ``i`` (counted from 0) on a batch already on
        ``device``, and leaves the optimisers alone when the loss is not finite.
        ``row(i, epoch, result, window)`` gives the metrics row of a logged step (``i`` counted
        from 1) and the progress bar's fields. ``evaluate()`` runs every ``cfg.eval_every``
        steps and at the end; ``after_checkpoint()`` (e.g. plots) after each checkpoint.
        """
        cfg, run = self.cfg, self.run
        fit = None
        if device.type == "cpu":
            if progress and self.rank == 0:
                tqdm.write(f"threads: {threads_line(torch.get_num_threads())}", file=sys.stderr)
            fit = FreeCores(torch.set_num_threads, torch.get_num_threads())
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{self.kind} {self.graph.name}", unit="step",
                   disable=not progress or self.rank != 0, dynamic_ncols=True)
        per_epoch = len(loader)
        last_val: dict = {}
        window, nonfinite = Window(), NonFinite()
        while self.step < cfg.steps:
            epoch, skip = divmod(self.step, per_epoch)
            for x, y in epoch_batches(loader, epoch, skip):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                interrupts.check()      # a Ctrl-C whose exception a finaliser swallowed
                result = step(self.step, x, y)
                if fit is not None:
                    before = fit.threads
                    if fit.tick() != before and progress and self.rank == 0:
                        tqdm.write(f"threads: {fit.threads} (other processes keep about "
                                   f"{fit.cpus - fit.threads} of the {fit.cpus} CPUs busy)", file=sys.stderr)
                nonfinite.add(self.step, result.loss)
                self.step += 1
                i, end = self.step, self.step == cfg.steps
                window.add(result, y)
                bar.update(1)
                logged, saved = i % cfg.log_every == 0 or end, i % cfg.checkpoint_every == 0 or end
                if logged or saved:
                    nonfinite.check()       # the only reads from the device between logged steps
                if self.rank == 0 and logged:
                    metrics, shown = row(i, epoch, result, window)
                    run.log(metrics)
                    bar.set_postfix(**shown, **({"val": f"{last_val['val_acc']:.3f}"} if last_val else {}))
                    window = Window()
                if evaluate is not None and (i % cfg.eval_every == 0 or end):
                    last_val = evaluate()
                    if self.rank == 0:
                        run.log({"step": i, **last_val})
                if saved:
                    self.save()
                    if self.rank == 0 and after_checkpoint is not None:
                        after_checkpoint()
                if i >= cfg.steps:
                    break
        bar.close()
        return last_val
