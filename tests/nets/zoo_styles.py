"""Image models written the way the popular PyTorch model zoos write them (timm, torchvision,
the hand-written MobileNetV3 repositories), for the importer's tests. Nothing here is
copied from those libraries; the styles are:

- ``BatchNormAct2d``: a BatchNorm2d subclass that calls ``F.batch_norm`` itself and then an
  activation chosen by a string through ``getattr(nn, ...)`` (timm's fused norm+act);
- activations as modules, as functions, and hand-written (``x * F.relu6(x + 3.) / 6.``);
- squeeze-and-excitation with each gate (sigmoid, nn.Hardsigmoid, ``F.relu6(x + 3.) / 6.``)
  and its own inner activation, pooled with ``x.mean((2, 3), keepdim=True)`` or
  ``nn.AdaptiveAvgPool2d(1)``;
- ``DropPath`` (stochastic depth: the identity in eval mode) on residual branches;
- padding as a module (``nn.ZeroPad2d`` before a ``padding=0`` conv) and TF's "same"
  padding computed in ``forward`` (``Conv2dSame``: ``F.pad``, asymmetric at stride 2);
- ``MobileNetV3Large`` (torchvision's layout) and ``EfficientNetB0`` (timm's layout).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACT_NAMES = {"relu": "ReLU", "relu6": "ReLU6", "swish": "SiLU", "silu": "SiLU", "hard_swish": "Hardswish",
             "hard_sigmoid": "Hardsigmoid", "sigmoid": "Sigmoid"}


class HardSwishManual(nn.Module):
    """The hand-written hard swish of the first MobileNetV3 repositories."""

    def forward(self, x):
        return x * F.relu6(x + 3.) / 6.


class HardSigmoidManual(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3.).div(6.)


class SwishManual(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def get_act(name: str) -> nn.Module:
    """An activation module by name, looked up with ``getattr`` as the zoos' factories do."""
    manual = {"hard_swish_manual": HardSwishManual, "hard_sigmoid_manual": HardSigmoidManual,
              "swish_manual": SwishManual}
    if name in manual:
        return manual[name]()
    return getattr(nn, ACT_NAMES[name])()


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm and its activation in one module; the norm is the functional call."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, act="relu", apply_act=True):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.act = get_act(act) if apply_act else nn.Identity()

    def forward(self, x):
        use_batch_stats = self.training or not self.track_running_stats
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch_stats,
                         self.momentum, self.eps)
        return self.act(x)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of some samples while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Conv2dSame(nn.Conv2d):
    """TF's "same" padding, computed from the input size in ``forward`` (asymmetric where the
    total is odd, e.g. a 3x3 conv at stride 2 on an even size pads 0 before and 1 after)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=False):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=bias)

    def forward(self, x):
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def create_conv2d(cin, cout, k, stride=1, groups=1, bias=False, padding="module"):
    """``padding``: "pytorch" (padding=k//2), "module" (nn.ZeroPad2d(k//2) + padding=0) or
    "same" (TF's, Conv2dSame)."""
    if padding == "same":
        return Conv2dSame(cin, cout, k, stride, groups, bias)
    if padding == "module" and k > 1:
        return nn.Sequential(nn.ZeroPad2d(k // 2), nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=bias))
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


class SqueezeExcite(nn.Module):
    """SE on ``channels``: pool, reduce conv, ``act``, expand conv, ``gate``, scale."""

    def __init__(self, channels, reduce, act="relu", gate="sigmoid", pool="mean"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "adaptive" else None
        self.conv_reduce = nn.Conv2d(channels, reduce, 1, bias=True)
        self.act = get_act(act)
        self.conv_expand = nn.Conv2d(reduce, channels, 1, bias=True)
        self.gate_name = gate
        self.gate = None if gate == "sigmoid" else get_act(gate)

    def forward(self, x):
        s = self.pool(x) if self.pool is not None else x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * (torch.sigmoid(s) if self.gate is None else self.gate(s))


class InvertedResidual(nn.Module):
    """timm's layout: conv_pw, bn1 (norm+act), conv_dw, bn2, se, conv_pwl, bn3, drop_path."""

    def __init__(self, cin, cout, k, stride, hidden, act="relu", se_reduce=0, se_act=None, se_gate="sigmoid",
                 padding="module", drop_path=0.0, bn=(1e-5, 0.1)):
        super().__init__()
        eps, mom = bn
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, hidden, 1, bias=False) if hidden != cin else None
        self.bn1 = BatchNormAct2d(hidden, eps, mom, act=act) if hidden != cin else None
        self.conv_dw = create_conv2d(hidden, hidden, k, stride, groups=hidden, padding=padding)
        self.bn2 = BatchNormAct2d(hidden, eps, mom, act=act)
        self.se = SqueezeExcite(hidden, se_reduce, se_act or act, se_gate) if se_reduce else nn.Identity()
        self.conv_pwl = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, eps, mom, apply_act=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        shortcut = x
        if self.conv_pw is not None:
            x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


# -- MobileNetV3-Large (torchvision's layout: 15 blocks, last conv 960, Linear 1280) ----------
#   in, k, expanded, out, SE, activation, stride
V3_LARGE = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
            (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1)]


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large: hard swish, SE with a ReLU inside and a hard-sigmoid gate (squeeze =
    make_divisible(expanded / 4)), BN eps 1e-3 momentum 0.01. ``hard_swish``: the activation's
    spelling ("hard_swish" = nn.Hardswish, "hard_swish_manual" = x * relu6(x + 3) / 6)."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000, hard_swish: str = "hard_swish",
                 se_gate: str = "hard_sigmoid", drop_path: float = 0.1, padding: str = "pytorch"):
        super().__init__()
        bn = (1e-3, 0.01)
        acts = {"RE": "relu", "HS": hard_swish}
        ch = lambda c: make_divisible(c * width)  # noqa: E731
        self.conv_stem = create_conv2d(3, ch(16), 3, 2, padding=padding)
        self.bn1 = BatchNormAct2d(ch(16), *bn, act=hard_swish)
        blocks = []
        for i, (cin, k, exp, cout, se, act, s) in enumerate(V3_LARGE):
            hidden = ch(exp)
            blocks.append(InvertedResidual(ch(cin), ch(cout), k, s, hidden, acts[act],
                                           make_divisible(hidden // 4) if se else 0, "relu", se_gate,
                                           padding, drop_path * i / len(V3_LARGE), bn))
        self.blocks = nn.Sequential(*blocks)
        last_conv = 6 * ch(160)
        self.conv_head = nn.Conv2d(ch(160), last_conv, 1, bias=False)
        self.bn2 = BatchNormAct2d(last_conv, *bn, act=hard_swish)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = make_divisible(1280 * width) if width > 1.0 else 1280
        self.classifier = nn.Sequential(nn.Linear(last_conv, last), get_act(hard_swish), nn.Dropout(0.2),
                                        nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


# -- EfficientNet-B0 (timm's layout: 16 blocks, SE 0.25 of the block input, swish) -------------
#   expand, k, stride, out, repeats
B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
             (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNetB0(nn.Module):
    """EfficientNet-B0: swish everywhere, SE with a swish inside and a sigmoid gate reducing
    to a quarter of the block's input channels, drop path growing to ``drop_path``.
    ``padding="same"`` is tf_efficientnet's TF padding (asymmetric at stride 2)."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000, act: str = "swish", drop_path: float = 0.2,
                 padding: str = "module", stages=B0_STAGES):
        super().__init__()
        bn = (1e-3, 0.01) if padding == "same" else (1e-5, 0.1)
        ch = lambda c: make_divisible(c * width)  # noqa: E731
        self.conv_stem = create_conv2d(3, ch(32), 3, 2, padding=padding)
        self.bn1 = BatchNormAct2d(ch(32), *bn, act=act)
        blocks, cin = [], ch(32)
        total, i = sum(st[4] for st in stages), 0
        for e, k, s, cout, n in stages:
            for j in range(n):
                blocks.append(InvertedResidual(cin, ch(cout), k, s if j == 0 else 1, cin * e, act,
                                               max(1, int(cin * 0.25)), act, "sigmoid", padding,
                                               drop_path * i / total, bn))
                cin, i = ch(cout), i + 1
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(cin, ch(1280), 1, bias=False)
        self.bn2 = BatchNormAct2d(ch(1280), *bn, act=act)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(ch(1280), num_classes))

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x).flatten(1))


# -- builders for `autonl import` (MODULE:CALLABLE) -------------------------------------------
def mobilenetv3_large():
    return MobileNetV3Large()


def efficientnet_b0():
    return EfficientNetB0()


def mobilenetv3_small_digits():
    """MobileNetV3-Large's layout at a quarter width for the 10 built-in digit classes."""
    return MobileNetV3Large(width=0.25, num_classes=10, hard_swish="hard_swish_manual")


def efficientnet_small_digits():
    """EfficientNet-B0's layout at a quarter width and one block per stage, 10 classes."""
    return EfficientNetB0(width=0.25, num_classes=10, stages=[(e, k, s, c, 1) for e, k, s, c, _ in B0_STAGES])
