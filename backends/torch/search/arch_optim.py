"""The thresholds' optimiser.

With Adam, each threshold's step is its gradient over that threshold's own running RMS: every
threshold moves at about the learning rate whatever its pull, so when the cost term pushes
them all one way (above the target) they rise in lockstep, and which gates cross first is
decided by the statistics' margins, not by what each option is worth for its cost (the
thresholds' trace on Fashion-MNIST: docs, benchmarks).

:class:`SharedAdam` keeps Adam's first moment per threshold but shares one second moment
among them all (the running mean square of every threshold's gradient): a threshold moves in
proportion to its own pull -- cost against accuracy, as plain gradient descent on the
objective would move it -- while the learning rate still sets the typical step, whatever the
scale of the loss, the data or the cost unit.
"""
from __future__ import annotations

import torch


class SharedAdam(torch.optim.Optimizer):
    """Adam with one second moment shared by every parameter (``betas``, ``eps`` as Adam's).

    Nothing is read back to the host: the shared moment stays a device tensor."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.state["shared"] = {"step": 0}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        b1, b2 = self.param_groups[0]["betas"]
        shared = self.state["shared"]
        shared["step"] += 1
        t = shared["step"]
        mean_sq = torch.stack([p.grad.pow(2).sum() for p in params]).sum() / sum(p.numel() for p in params)
        if "v" not in shared:
            shared["v"] = torch.zeros_like(mean_sq)
        shared["v"].mul_(b2).add_(mean_sq, alpha=1 - b2)
        for group in self.param_groups:
            denom = (shared["v"] / (1 - b2 ** t)).sqrt().add_(group["eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "m" not in st:
                    st["m"] = torch.zeros_like(p)
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                p.sub_(group["lr"] / (1 - b1 ** t) * st["m"] / denom)
        return loss
