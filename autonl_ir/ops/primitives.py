"""Primitive ops: the ones every backend implements directly.

Cost convention (method.md): MACs count convolutions, linear layers and matrix products;
batch norm, activations, additions, pooling and reshapes cost no MACs. Parameters are the
trainable ones (BN's gamma and beta count, its running statistics do not).
"""
from __future__ import annotations

from math import prod
from typing import Sequence

import numpy as np

from ..types import TensorType
from .op_registry import AttrSpec, Cost, OpDef, expect, register_op

INT64_MAX = 2**63 - 1


def _rank(x: TensorType, r: int, op: str) -> None:
    expect(x.rank == r, f"{op} expects a rank-{r} input, got {x}")


def conv_pads(a) -> tuple[int, int, int, int]:
    """A ``conv2d``'s zero padding (top, left, bottom, right) from its full attributes."""
    pad = list(a["pad"])
    if not pad:
        p = a["k"] // 2
        return p, p, p, p
    expect(len(pad) == 4 and min(pad) >= 0, f"conv2d pad must be 4 non-negative ints [top, left, bottom, right], "
                                            f"got {pad}")
    return tuple(pad)


@register_op
class Conv2d(OpDef):
    name = "conv2d"
    doc = ("2-D convolution, NCHW, zero padding k//2 on each side (odd k keeps the size at stride 1), "
           "or the explicit zero padding `pad` = [top, left, bottom, right] (e.g. TF's asymmetric \"same\").")
    attrs = {
        "out": AttrSpec("int", doc="output channels"),
        "k": AttrSpec("int", 1, doc="square kernel size"),
        "s": AttrSpec("int", 1, doc="stride"),
        "groups": AttrSpec("int", 1, doc="channel groups; groups == in == out is depthwise"),
        "bias": AttrSpec("bool", False, doc="add a learned bias"),
        "pad": AttrSpec("ints", [], doc="zero padding [top, left, bottom, right]; [] = k//2 on every side"),
    }

    def infer(self, inputs, a):
        (x,) = inputs
        _rank(x, 4, "conv2d")
        n, c, h, w = x.shape
        out, k, s, g = a["out"], a["k"], a["s"], a["groups"]
        expect(out >= 1 and k >= 1 and s >= 1 and g >= 1, "out, k, s and groups must be positive")
        expect(c % g == 0 and out % g == 0,
               f"groups={g} must divide input channels {c} and output channels {out}")
        top, left, bottom, right = conv_pads(a)
        ho, wo = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
        expect(ho >= 1 and wo >= 1, f"kernel {k} does not fit input {x}")
        return x.with_shape((n, out, ho, wo))

    def cost(self, inputs, out, a):
        c, k, g = inputs[0].shape[1], a["k"], a["groups"]
        weights = a["out"] * (c // g) * k * k
        n, _, ho, wo = out.shape
        return Cost(macs=n * ho * wo * weights, params=weights + (a["out"] if a["bias"] else 0))


@register_op
class BatchNorm(OpDef):
    name = "batch_norm"
    doc = "Batch normalisation over dim 1 (inference: running statistics)."
    attrs = {
        "eps": AttrSpec("float", 1e-5),
        "momentum": AttrSpec("float", 0.1, doc="running-average momentum, PyTorch convention"),
        "zero_init": AttrSpec("bool", False, doc="initialise gamma to 0 (a residual branch starts off)"),
    }

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank >= 2, f"batch_norm expects rank >= 2, got {x}")
        expect(a["eps"] > 0, "eps must be positive")
        return x

    def cost(self, inputs, out, a):
        return Cost(params=2 * inputs[0].shape[1])


def _elementwise(op_name: str, text: str) -> type[OpDef]:
    class Elementwise(OpDef):
        name = op_name
        doc = text

        def infer(self, inputs, a):
            return inputs[0]

    Elementwise.__name__ = Elementwise.__qualname__ = op_name.capitalize()
    return register_op(Elementwise)


Relu = _elementwise("relu", "max(x, 0)")
Relu6 = _elementwise("relu6", "min(max(x, 0), 6)")
Silu = _elementwise("silu", "x * sigmoid(x) (swish)")
Sigmoid = _elementwise("sigmoid", "1 / (1 + exp(-x))")
Hardsigmoid = _elementwise("hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3's gate)")
Hardswish = _elementwise("hardswish", "x * relu6(x + 3) / 6 (MobileNetV3's activation)")


def _broadcast(op: str, inputs: Sequence[TensorType]) -> TensorType:
    a, b = inputs
    expect(a.dtype == b.dtype, f"{op} of {a.dtype} and {b.dtype}")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        expect(False, f"{op}: shapes {a} and {b} do not broadcast")
    return a.with_shape(shape)


@register_op
class Add(OpDef):
    name = "add"
    num_inputs = 2
    doc = "Elementwise sum with NumPy broadcasting (the residual connection)."

    def infer(self, inputs, a):
        return _broadcast("add", inputs)


@register_op
class Mul(OpDef):
    name = "mul"
    num_inputs = 2
    doc = "Elementwise product with NumPy broadcasting (the squeeze-and-excitation gate)."

    def infer(self, inputs, a):
        return _broadcast("mul", inputs)


@register_op
class Scale(OpDef):
    name = "scale"
    doc = "Multiply by a constant factor."
    attrs = {"factor": AttrSpec("float")}

    def infer(self, inputs, a):
        return inputs[0]


@register_op
class L2Normalize(OpDef):
    name = "l2_normalize"
    doc = ("x / sqrt(sum(x^2 over axis) + eps): unit length along one axis (LightNL's norm=\"l2\"). "
           "Elementwise work and a reduction: no MACs by the cost convention.")
    attrs = {"axis": AttrSpec("int"), "eps": AttrSpec("float", 1e-6, doc="added under the square root")}

    def infer(self, inputs, a):
        (x,) = inputs
        expect(0 <= a["axis"] < x.rank, f"l2_normalize axis {a['axis']} out of range for {x}")
        expect(a["eps"] > 0, f"l2_normalize eps must be positive, got {a['eps']}")
        return x


@register_op
class GlobalAvgPool(OpDef):
    name = "global_avg_pool"
    doc = "Mean over H and W of an NCHW tensor."
    attrs = {"keepdim": AttrSpec("bool", False, doc="keep H and W as size-1 dims")}

    def infer(self, inputs, a):
        (x,) = inputs
        _rank(x, 4, "global_avg_pool")
        n, c = x.shape[:2]
        return x.with_shape((n, c, 1, 1) if a["keepdim"] else (n, c))


@register_op
class Flatten(OpDef):
    name = "flatten"
    doc = "Merge dims start..end into one."
    attrs = {"start": AttrSpec("int", 1)}

    def infer(self, inputs, a):
        (x,) = inputs
        s = a["start"]
        expect(0 <= s < max(x.rank, 1), f"flatten start {s} out of range for {x}")
        return x.with_shape((*x.shape[:s], prod(x.shape[s:])))


@register_op
class Reshape(OpDef):
    name = "reshape"
    doc = "Same elements, new shape; one dim may be -1."
    attrs = {"shape": AttrSpec("ints")}

    def infer(self, inputs, a):
        (x,) = inputs
        shape = list(a["shape"])
        expect(shape.count(-1) <= 1 and all(d >= 1 or d == -1 for d in shape),
               f"bad target shape {shape}")
        if -1 in shape:
            known = prod(d for d in shape if d != -1)
            expect(known > 0 and x.numel % known == 0, f"cannot reshape {x} to {shape}")
            shape[shape.index(-1)] = x.numel // known
        expect(prod(shape) == x.numel, f"cannot reshape {x} ({x.numel} elements) to {shape}")
        return x.with_shape(shape)


@register_op
class Permute(OpDef):
    name = "permute"
    doc = "Reorder dims."
    attrs = {"dims": AttrSpec("ints")}

    def infer(self, inputs, a):
        (x,) = inputs
        dims = a["dims"]
        expect(sorted(dims) == list(range(x.rank)), f"dims {dims} is not a permutation of {x.rank} dims")
        return x.with_shape(tuple(x.shape[d] for d in dims))


@register_op
class Linear(OpDef):
    name = "linear"
    doc = "Fully connected layer on the last dim."
    attrs = {"out": AttrSpec("int"), "bias": AttrSpec("bool", True)}

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank >= 2, f"linear expects rank >= 2, got {x}")
        expect(a["out"] >= 1, "out must be positive")
        return x.with_shape((*x.shape[:-1], a["out"]))

    def cost(self, inputs, out, a):
        x = inputs[0]
        weights = x.shape[-1] * a["out"]
        return Cost(macs=prod(x.shape[:-1]) * weights, params=weights + (a["out"] if a["bias"] else 0))


@register_op
class Dropout(OpDef):
    name = "dropout"
    doc = "Zero elements with probability p while training; identity in inference."
    attrs = {"p": AttrSpec("float", 0.0)}

    def infer(self, inputs, a):
        expect(0.0 <= a["p"] < 1.0, f"dropout p must be in [0, 1), got {a['p']}")
        return inputs[0]


@register_op
class Slice(OpDef):
    name = "slice"
    doc = "x[start:end:step] along one axis, Python semantics (ends are clamped)."
    attrs = {
        "axis": AttrSpec("int"),
        "start": AttrSpec("int", 0),
        "end": AttrSpec("int", INT64_MAX),
        "step": AttrSpec("int", 1),
    }

    def infer(self, inputs, a):
        (x,) = inputs
        axis = a["axis"]
        expect(0 <= axis < x.rank, f"slice axis {axis} out of range for {x}")
        expect(a["step"] >= 1, "slice step must be positive")
        size = len(range(*slice(a["start"], a["end"], a["step"]).indices(x.shape[axis])))
        expect(size >= 1, f"slice {a['start']}:{a['end']}:{a['step']} of axis {axis} of {x} is empty")
        shape = list(x.shape)
        shape[axis] = size
        return x.with_shape(shape)


@register_op
class MatMul(OpDef):
    name = "matmul"
    num_inputs = 2
    doc = "Batched matrix product [..., M, K] @ [..., K, N] with equal batch dims."

    def infer(self, inputs, a):
        x, y = inputs
        expect(x.rank >= 2 and x.rank == y.rank, f"matmul of {x} and {y}: ranks must match and be >= 2")
        expect(x.shape[:-2] == y.shape[:-2], f"matmul of {x} and {y}: batch dims differ")
        expect(x.shape[-1] == y.shape[-2], f"matmul of {x} and {y}: inner dims differ")
        return x.with_shape((*x.shape[:-1], y.shape[-1]))

    def cost(self, inputs, out, a):
        x, y = inputs
        return Cost(macs=prod(x.shape) * y.shape[-1])
