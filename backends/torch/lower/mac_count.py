"""Counting MACs and parameters of a torch module by running it (forward hooks).

This is independent of the IR's cost model: it reads the shapes of real tensors. Counted
like the IR counts: convolutions, linear layers and matrix products (``MatMul`` modules).
"""
from __future__ import annotations

from math import prod

import torch
from torch import nn

from .modules import MatMul


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass on ``inputs``."""
    total = 0

    def conv(m: nn.Conv2d, args, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * prod(m.kernel_size)

    def linear(m: nn.Linear, args, out):
        nonlocal total
        total += out.numel() * m.in_features

    def matmul(m: MatMul, args, out):
        nonlocal total
        total += out.numel() * args[0].shape[-1]

    hooks = []
    for m in module.modules():   # subclasses too (a Conv2dSame that pads in forward, PaddedConv2d)
        hook = next((h for cls, h in ((nn.Conv2d, conv), (nn.Linear, linear), (MatMul, matmul)) if isinstance(m, cls)),
                    None)
        if hook is not None:
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
