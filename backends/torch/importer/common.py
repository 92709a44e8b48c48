"""What the importer's two paths share (``autonl.backends.torch.importer``): the error, IR
names, the emitter that builds the graph and keeps the weights, and the attribute rules of
convolution and batch norm."""
from __future__ import annotations

import re

import numpy as np

from autonl.ir import AutonlError, Graph, TensorType

SUPPORTED = ("nn.Conv2d (2-D, square, zero padding)", "nn.ZeroPad2d/F.pad before a conv", "nn.BatchNorm2d/F.batch_norm",
             "ReLU", "ReLU6", "SiLU", "Sigmoid", "Hardswish", "Hardsigmoid", "relu6(x + 3) / 6",
             "+", "*", "/ a number", "mean over (2, 3)", "AdaptiveAvgPool2d(1)", "view/reshape/flatten",
             "permute", "nn.Linear", "Dropout/DropPath/Identity (eval)")


class UnsupportedOpError(AutonlError):
    """A module or function the importer has no IR primitive for."""

    def __init__(self, where: str, what: str, why: str = "", aten=None):
        self.where, self.what, self.why, self.aten = where, what, why, aten
        detail = f" ({why})" if why else ""
        op = f" (ATen op {aten})" if aten is not None and "ATen op" not in what else ""
        super().__init__(f"cannot import {where or 'the top-level module'}: {what}{op} is not supported{detail}; "
                         f"supported: {', '.join(SUPPORTED)}")


def ir_name(path: str) -> str:
    """``features.3.conv.0`` -> ``features_3_conv_0`` (an IR name, and a Python identifier)."""
    name = re.sub(r"\W", "_", path).strip("_") or "node"
    return name if not name[0].isdigit() else f"n{name}"


class _Val(str):
    """An IR value's name (a str, told apart from string constants among ATen arguments)."""


class _Emitter:
    """Builds the IR graph while the trace is walked: values, types (from the example run)
    and weights."""

    def __init__(self, name: str, input_shape: tuple[int, ...]):
        self.graph = Graph(name, {"x": TensorType("f32", tuple(input_shape))})
        self.params: dict[str, np.ndarray] = {}

    def emit(self, op: str, inputs: list[str], base: str, shape, attrs: dict | None = None,
             weights: dict | None = None) -> str:
        name = self.graph.fresh_name(ir_name(base))
        self.graph.add_node(op, inputs, attrs or {}, name=name, type=TensorType("f32", tuple(int(d) for d in shape)))
        for k, v in (weights or {}).items():
            if v is not None:
                self.params[f"{name}.{k}"] = v.detach().cpu().numpy().copy()
        return _Val(name)


def _conv_attrs(where: str, w, bias, stride, padding, dilation, groups, padding_mode="zeros") -> dict:
    """conv2d attributes of a 2-D convolution; ``padding`` is torch's (an int, a pair, "same",
    "valid") or (top, left, bottom, right). Anything the IR's conv2d cannot compute exactly
    (non-square kernels or strides, dilation, non-zero padding modes) is refused."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    k = tuple(int(d) for d in w.shape[2:])
    s, d = pair(stride), pair(dilation)
    if k[0] != k[1] or s[0] != s[1]:
        raise UnsupportedOpError(where, "conv2d", f"kernel {k} and stride {s} must be square")
    if tuple(d) != (1, 1) or padding_mode != "zeros":
        raise UnsupportedOpError(where, "conv2d", f"dilation {d}, padding mode {padding_mode!r}")
    if padding == "same":
        lo = (k[0] - 1) // 2
        pads = (lo, lo, k[0] - 1 - lo, k[0] - 1 - lo)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(int(p) for p in padding)
    else:
        ph, pw = pair(padding)
        pads = (int(ph), int(pw), int(ph), int(pw))
    attrs = {"out": int(w.shape[0]), "k": int(k[0])}
    if s[0] != 1:
        attrs["s"] = int(s[0])
    if groups != 1:
        attrs["groups"] = int(groups)
    if bias is not None:
        attrs["bias"] = True
    if pads != (k[0] // 2,) * 4:
        attrs["pad"] = list(pads)
    return attrs


def _bn_attrs(eps: float, momentum) -> dict:
    attrs = {}
    if abs(eps - 1e-5) > 1e-12:
        attrs["eps"] = float(eps)
    if momentum is not None and abs(momentum - 0.1) > 1e-12:
        attrs["momentum"] = float(momentum)
    return attrs


def _is_global_mean(dims, ndim: int) -> bool:
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(d % ndim for d in dims) == [2, 3] and ndim == 4


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _where(node) -> str:
    path = _module_path(node)
    return f"{path} ({node.name})" if path else node.name
