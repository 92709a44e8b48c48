"""An FBNet-C-style network for the importer's tests (written here, not copied from a zoo).

FBNet's inverted residual (``IRFBlock``: ``pw`` 1x1 expansion, ``dw`` depthwise, ``pwl`` 1x1
projection, the input added where the shapes match) keeps its 1x1 expansion conv at
expansion 1: FBNet-C's first block is conv1x1(16->16)+BN+ReLU, dw3x3+BN+ReLU, conv1x1+BN, plus
the input. The IR's ``mbconv`` with ``e=1`` has no expansion conv, so the importer keeps such a
block as primitives; a MobileNetV2-style block of expansion 1 (no ``pw``) still folds.

``fbnet_c_small()`` is the network the tests import (with ``autonl import`` too): random BN
statistics and affine terms, and a classifier scaled up, so that every layer shapes the
logits and they are large.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBNRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, relu: bool = True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduce: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, reduce, 1), nn.Conv2d(reduce, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class IRFBlock(nn.Module):
    """pw (1x1 expansion; kept at expansion 1 unless ``keep_pw`` is false), dw, [SE], pwl, and
    the residual where the stride is 1 and the widths match."""

    def __init__(self, cin: int, cout: int, e: int, k: int = 3, s: int = 1, keep_pw: bool = True, se: int = 0):
        super().__init__()
        mid = cin * e
        self.pw = ConvBNRelu(cin, mid) if e != 1 or keep_pw else nn.Identity()
        self.dw = ConvBNRelu(mid, mid, k, s, groups=mid)
        self.se = SqueezeExcite(mid, se) if se else nn.Identity()
        self.pwl = ConvBNRelu(mid, cout, relu=False)
        self.use_res = s == 1 and cin == cout

    def forward(self, x):
        y = self.pwl(self.se(self.dw(self.pw(x))))
        return x + y if self.use_res else y


class FBNetCStyle(nn.Module):
    """Stem, FBNet-C's first block (expansion 1 with its 1x1 expansion conv, residual), a
    stride-2 block, a MobileNetV2-style expansion-1 block (no expansion conv, residual), a
    stride-2 block, the 1x1 head and the classifier."""

    def __init__(self, num_classes: int = 10, first_se: int = 0, first_residual: bool = True):
        super().__init__()
        first = IRFBlock(16, 16 if first_residual else 24, 1, 3, 1, keep_pw=True, se=first_se)
        c1 = 16 if first_residual else 24
        self.stem = ConvBNRelu(3, 16, 3, 2)
        self.stages = nn.Sequential(first, IRFBlock(c1, 24, 6, 3, 2), IRFBlock(24, 24, 1, 5, 1, keep_pw=False),
                                    IRFBlock(24, 32, 3, 5, 2))
        self.head = ConvBNRelu(32, 128)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.head(self.stages(self.stem(x)))), 1))


def randomized(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms and a classifier 32x its initial scale, in place;
    the network in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 1.0)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.6 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.mul_(32.0)
    return net.eval()


def fbnet_c_small(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return randomized(FBNetCStyle(**kwargs))
