"""nn.Modules for the IR's composite ops, and the matmul module the MAC counter hooks.

Children are named like the parts of the op's IR lowering (``expand``, ``dw_bn``,
``se.reduce``, ``project``...), so a state dict fits the composite graph and the lowered
graph alike: ``lower-composites`` keeps weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autonl.ir.ops import LIGHTNL_NORM_EPS, get_op, lightnl_channels, mbconv_widths

NonLocalOp = get_op("non_local")

ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


class MatMul(nn.Module):
    """``torch.matmul`` as a module, so that forward hooks see (and count) every product."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def batch_norm(channels: int, eps: float, momentum: float, zero_init: bool = False, rank: int = 4) -> nn.Module:
    bn = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(channels, eps=eps, momentum=momentum)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduce: int, act: str, gate: str = "sigmoid"):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduce, 1, bias=True)
        self.expand = nn.Conv2d(reduce, channels, 1, bias=True)
        self.act, self.gate = ACTIVATIONS[act], GATES[gate]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class PaddedConv2d(nn.Conv2d):
    """A convolution with explicit, possibly asymmetric zero padding (the IR's ``conv2d{pad}``,
    e.g. TF's "same"); its parameters are named like ``nn.Conv2d``'s."""

    def __init__(self, *args, pads: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        top, left, bottom, right = pads
        self.pads = (left, right, top, bottom)      # F.pad's order: last dim first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


def conv2d(cin: int, out: int, k: int, s: int, pads: tuple[int, int, int, int], groups: int = 1,
           bias: bool = False) -> nn.Conv2d:
    """The IR's ``conv2d`` as a module: ``nn.Conv2d`` where the zero padding (top, left, bottom,
    right) is symmetric, ``PaddedConv2d`` where it is not; parameters named alike."""
    top, left, bottom, right = pads
    if (top, left) == (bottom, right):
        return nn.Conv2d(cin, out, k, s, padding=(top, left), groups=groups, bias=bias)
    return PaddedConv2d(cin, out, k, s, pads=pads, groups=groups, bias=bias)


class MBConv(nn.Module):
    """Inverted residual without its residual addition (an ``add`` node of its own in the IR)."""

    def __init__(self, cin: int, out: int, e: float, k: int, s: int, se: float, act: str,
                 eps: float, momentum: float, se_act: str | None = None, se_gate: str = "sigmoid",
                 pads: tuple[int, int, int, int] | None = None):
        super().__init__()
        hidden, reduce = mbconv_widths(cin, e, se)
        self.act = ACTIVATIONS[act]
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False) if e != 1 else None
        self.expand_bn = batch_norm(hidden, eps, momentum) if e != 1 else None
        self.dw = conv2d(hidden, hidden, k, s, pads or (k // 2,) * 4, groups=hidden)
        self.dw_bn = batch_norm(hidden, eps, momentum)
        self.se = SqueezeExcite(hidden, reduce, se_act or act, se_gate) if reduce else None
        self.project = nn.Conv2d(hidden, out, 1, bias=False)
        self.project_bn = batch_norm(out, eps, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand is not None:
            x = self.act(self.expand_bn(self.expand(x)))
        x = self.act(self.dw_bn(self.dw(x)))
        if self.se is not None:
            x = self.se(x)
        return self.project_bn(self.project(x))


def lightnl_operands(x: torch.Tensor, rc: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LightNL's q [N, rc, HW], k^T [N, h'w', rc] and v [N, C, h'w'] read from ``x`` (no
    embeddings): q, k the first ``rc`` channels, k and v at every s-th row and column."""
    n, c, h, w = x.shape
    q = x[:, :rc].reshape(n, rc, h * w)
    xs = x[:, :, ::s, ::s] if s > 1 else x
    kt = xs[:, :rc].reshape(n, rc, -1).transpose(1, 2)
    return q, kt, xs.reshape(n, c, -1)


def l2_normalize(t: torch.Tensor, dim: int, eps: float = LIGHTNL_NORM_EPS) -> torch.Tensor:
    """``t / sqrt(sum(t^2 over dim) + eps)`` (the IR's ``l2_normalize``, LightNL's norm="l2")."""
    return t * torch.rsqrt(t.pow(2).sum(dim, keepdim=True) + eps)


def lightnl_attention(x: torch.Tensor, rc: int, s: int, order: str, mm1: nn.Module, mm2: nn.Module,
                      norm: str = "none") -> torch.Tensor:
    """LightNL's y = q @ (k^T @ v) / (H*W), channel-major (method.md section 1).

    q: the first ``rc`` channels at every position; k: the first ``rc`` channels and v: all
    channels, at every s-th row and column. No softmax, no embeddings. ``order`` picks
    ``key_value_first`` ((V K^T) Q) or ``affinity_first`` (V (K^T Q)); both give the same
    value, the IR picks the cheaper statically. ``norm="l2"``: queries and keys scaled to
    unit length over their ``rc`` channels first (the op's safe variant).
    """
    n, c, h, w = x.shape
    q, kt, v = lightnl_operands(x, rc, s)
    if norm == "l2":
        q, kt = l2_normalize(q, 1), l2_normalize(kt, 2)
    elif norm != "none":
        raise ValueError(f"unknown LightNL norm {norm!r}")
    if order == "key_value_first":
        y = mm2(mm1(v, kt), q)
    elif order == "affinity_first":
        y = mm2(v, mm1(kt, q))
    else:
        raise ValueError(f"unknown LightNL order {order!r}")
    return (y * (1.0 / (h * w))).reshape(n, c, h, w)


class LightNL(nn.Module):
    """z = x + BN(depthwise3x3(y)), BN gamma starting at 0 (the block starts as identity)."""

    def __init__(self, channels: int, r: float, s: int, order: str, eps: float, momentum: float, norm: str = "none"):
        super().__init__()
        self.rc, self.s, self.order, self.norm = lightnl_channels(channels, r), s, order, norm
        self.mm1, self.mm2 = MatMul(), MatMul()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = batch_norm(channels, eps, momentum, zero_init=True)

    def forward(self, x: torch.Tensor, order: str | None = None) -> torch.Tensor:
        y = lightnl_attention(x, self.rc, self.s, order or self.order, self.mm1, self.mm2, self.norm)
        return x + self.bn(self.dw(y))


class NonLocal(nn.Module):
    """Wang et al.'s dot-product non-local block: y = g (phi^T theta) / (H*W), z = x + BN(W y)."""

    def __init__(self, channels: int, ratio: float, eps: float, momentum: float):
        super().__init__()
        m = NonLocalOp.inner(channels, {"ratio": ratio})
        self.theta = nn.Conv2d(channels, m, 1, bias=True)
        self.phi = nn.Conv2d(channels, m, 1, bias=True)
        self.g = nn.Conv2d(channels, m, 1, bias=True)
        self.out = nn.Conv2d(m, channels, 1, bias=False)
        self.bn = batch_norm(channels, eps, momentum, zero_init=True)
        self.mm1, self.mm2 = MatMul(), MatMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2)
        phi = self.phi(x).flatten(2)
        g = self.g(x).flatten(2)
        affinity = self.mm1(phi.transpose(1, 2), theta)          # [N, HW_j, HW_i]
        y = self.mm2(g, affinity) * (1.0 / (h * w))              # [N, m, HW_i]
        return x + self.bn(self.out(y.reshape(n, -1, h, w)))
