"""Evaluation of a module on a loader, and precise BN (re-estimating BN statistics first).

Before each evaluation of a run, BN statistics are re-estimated on training batches
("precise BN"): with the AutoNL presets' BN momentum of 0.01 the running averages lag far
behind the weights in a short run, and a supernet's statistics mix many sub-networks.
"""
from __future__ import annotations

import torch
from torch import nn

from autonl.ir import AutonlError

from ..device import autocast

__all__ = ["evaluate", "per_class_accuracy", "recalibrate_bn"]


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
    # no image with finite logits: there is no loss to average (null, not a 0.0 that reads as perfect)
    out = {"val_loss": loss / (total - nonfinite) if total > nonfinite else None, "val_acc": correct / total,
           "val_n": total}
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


@torch.no_grad()
def per_class_accuracy(module: nn.Module, loader, device: torch.device, classes: int) -> dict:
    """``{"val_acc", "val_n", "per_class": [accuracy or None per class], "per_class_n": [images]}``
    on ``loader``; an image whose logits are not finite counts as wrong (as :func:`evaluate`)."""
    module.eval()
    correct = torch.zeros(classes, dtype=torch.long)
    seen = torch.zeros(classes, dtype=torch.long)
    for x, y in loader:
        with autocast(device):
            logits = module(x.to(device, non_blocking=True)).float().cpu()
        right = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
        seen += torch.bincount(y, minlength=classes)[:classes]
        correct += torch.bincount(y[right], minlength=classes)[:classes]
    total = int(seen.sum())
    if total == 0:
        raise AutonlError("the validation set is empty")
    return {"val_acc": int(correct.sum()) / total, "val_n": total,
            "per_class": [int(c) / int(n) if n else None for c, n in zip(correct, seen)],
            "per_class_n": [int(n) for n in seen]}
