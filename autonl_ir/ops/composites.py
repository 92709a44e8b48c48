"""Composite ops: blocks with a known cost formula and a lowering to primitives.

Each composite's :meth:`cost` is written from its formula (method.md sections 1 and 2),
independently of its :meth:`lower`; tests check that the two agree.
"""
from __future__ import annotations

import math

from ..types import TensorType
from .op_registry import AttrSpec, Cost, OpDef, expect, register_op

ACTIVATIONS = ("relu", "relu6", "silu", "hardswish")
GATES = ("sigmoid", "hardsigmoid")


def conv_out_size(size: int, k: int, s: int) -> int:
    """Output length of a convolution with padding k // 2 (see ``conv2d``)."""
    return (size + 2 * (k // 2) - k) // s + 1


def same_pads(h: int, w: int, k: int, s: int) -> tuple[int, int, int, int]:
    """TF's "same" zero padding (top, left, bottom, right) of a k x k conv at stride s on h x w:
    ceil(size / s) outputs, the odd pixel of an odd total padded after (e.g. 0 and 1 for a 3x3
    conv at stride 2 on an even size). For odd k at stride 1 it is k//2 on every side."""
    def one(size: int) -> tuple[int, int]:
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2
    (top, bottom), (left, right) = one(h), one(w)
    return top, left, bottom, right


def mbconv_dw_pads(h: int, w: int, k: int, s: int, pad: str) -> tuple[int, int, int, int]:
    """The depthwise conv's zero padding of an mbconv (its ``pad`` attribute) on an h x w input."""
    return same_pads(h, w, k, s) if pad == "same" else (k // 2,) * 4


def mbconv_widths(cin: int, e: float, se: float) -> tuple[int, int]:
    """(hidden channels, SE reduce channels; 0 = no SE) of an MBConv on ``cin`` channels: the
    one definition the cost model, the lowering and the torch modules share."""
    hidden = int(round(cin * e))
    reduce = max(1, int(round(cin * se))) if se > 0 else 0
    return hidden, reduce


def lightnl_channels(c: int, r: float) -> int:
    """LightNL's query/key channels: the first floor(r*C) of C."""
    return int(math.floor(r * c))


def se_act(a) -> str:
    """The activation inside an mbconv's SE (its ``se_act``, where ``same`` is the block's)."""
    return a["act"] if a["se_act"] == "same" else a["se_act"]


def _bn_attrs(eps: float, momentum: float, **extra) -> dict:
    """BN attributes, leaving out the defaults so the printed IR stays short."""
    from .op_registry import get_op
    return get_op("batch_norm").without_defaults({"eps": eps, "momentum": momentum, **extra})


def _bn_specs() -> dict[str, AttrSpec]:
    return {"eps": AttrSpec("float", 1e-5, doc="BN epsilon"),
            "momentum": AttrSpec("float", 0.1, doc="BN momentum, PyTorch convention")}


@register_op
class SqueezeExcite(OpDef):
    composite = True
    name = "se"
    doc = ("Squeeze-and-excitation: x * gate(conv1x1(act(conv1x1(mean_hw(x))))); "
           "the two 1x1 convs have biases (EfficientNet: silu and sigmoid; MobileNetV3: relu and hardsigmoid).")
    attrs = {"reduce": AttrSpec("int", doc="channels after the reduce conv"),
             "act": AttrSpec("str", "silu", one_of=ACTIVATIONS),
             "gate": AttrSpec("str", "sigmoid", one_of=GATES)}

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank == 4, f"se expects NCHW, got {x}")
        expect(a["reduce"] >= 1, "reduce must be positive")
        return x

    def cost(self, inputs, out, a):
        n, c = inputs[0].shape[:2]
        r = a["reduce"]
        return Cost(macs=n * 2 * c * r, params=2 * c * r + r + c)

    def lower(self, b, inputs, a):
        (x,) = inputs
        c = b.type_of(x).shape[1]
        h = b.emit("global_avg_pool", [x], "pool", keepdim=True)
        h = b.emit("conv2d", [h], "reduce", out=a["reduce"], bias=True)
        h = b.emit(a["act"], [h], "act")
        h = b.emit("conv2d", [h], "expand", out=c, bias=True)
        h = b.emit(a["gate"], [h], "gate")
        return b.emit("mul", [x, h], "scale")


@register_op
class MBConv(OpDef):
    composite = True
    name = "mbconv"
    doc = ("Inverted residual: [1x1 expand + BN + act] -> kxk depthwise (stride s) + BN + act -> "
           "[SE] -> 1x1 project + BN. The identity residual is a separate `add` node, so that a "
           "LightNL block can sit between the projection and the residual addition.")
    attrs = {
        "out": AttrSpec("int", doc="output channels"),
        "e": AttrSpec("float", 1, doc="expansion ratio; hidden = round(in * e); 1 = no expand conv"),
        "k": AttrSpec("int", 3, doc="depthwise kernel size"),
        "s": AttrSpec("int", 1, doc="depthwise stride"),
        "se": AttrSpec("float", 0.0, doc="SE reduce channels as a ratio of the block's input channels; 0 = no SE"),
        "act": AttrSpec("str", "relu6", one_of=ACTIVATIONS),
        "se_act": AttrSpec("str", "same", one_of=("same",) + ACTIVATIONS,
                           doc="SE's inner activation; same = the block's act (MobileNetV3: relu)"),
        "se_gate": AttrSpec("str", "sigmoid", one_of=GATES, doc="SE's gate (MobileNetV3: hardsigmoid)"),
        "skip": AttrSpec("bool", False, doc="the block is dropped (only where it has an identity residual)"),
        "pad": AttrSpec("str", "symmetric", one_of=("symmetric", "same"),
                        doc="depthwise padding: symmetric k//2, or TF's \"same\" (tf_efficientnet; asymmetric "
                            "at stride 2 on even sizes, the same output size)"),
        **_bn_specs(),
    }

    @staticmethod
    def widths(cin: int, a) -> tuple[int, int]:
        """(hidden channels, SE reduce channels) for input channels ``cin``."""
        return mbconv_widths(cin, a["e"], a["se"])

    @staticmethod
    def has_identity_residual(x: TensorType, a) -> bool:
        return a["s"] == 1 and x.shape[1] == a["out"]

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank == 4, f"mbconv expects NCHW, got {x}")
        expect(a["e"] >= 1 and a["k"] >= 1 and a["s"] >= 1 and a["out"] >= 1,
               "e must be >= 1 and out, k, s positive")
        expect(a["pad"] == "symmetric" or a["k"] % 2 == 1, f"pad=\"same\" needs an odd kernel, got k={a['k']}")
        expect(a["se"] >= 0, f"se ratio must be >= 0, got {a['se']}")
        expect(not a["skip"] or self.has_identity_residual(x, a),
               f"skip needs an identity residual (s=1 and out == input channels {x.shape[1]})")
        n, _, h, w = x.shape
        return x.with_shape((n, a["out"], conv_out_size(h, a["k"], a["s"]), conv_out_size(w, a["k"], a["s"])))

    @staticmethod
    def discrete_problem(a) -> str | None:
        if a["skip"] is True:
            return "skip=true outside a choice: a skipped block must be removed (the derive pass does it)"
        return None

    def cost(self, inputs, out, a):
        if a["skip"]:
            return Cost()
        n, cin, h, w = inputs[0].shape
        ho, wo = out.shape[2:]
        hidden, r = self.widths(cin, a)
        macs = params = 0
        if a["e"] != 1:
            macs += h * w * cin * hidden
            params += cin * hidden + 2 * hidden
        macs += ho * wo * hidden * a["k"] ** 2
        params += hidden * a["k"] ** 2 + 2 * hidden
        if r:
            macs += 2 * hidden * r
            params += 2 * hidden * r + r + hidden
        macs += ho * wo * hidden * a["out"]
        params += hidden * a["out"] + 2 * a["out"]
        return Cost(macs=n * macs, params=params)

    def lower(self, b, inputs, a):
        (h,) = inputs
        expect(not a["skip"], "a skipped mbconv cannot be lowered; derive the graph first")
        cin = b.type_of(h).shape[1]
        hidden, r = self.widths(cin, a)
        bn = _bn_attrs(a["eps"], a["momentum"])
        if a["e"] != 1:
            h = b.emit("conv2d", [h], "expand", out=hidden)
            h = b.emit("batch_norm", [h], "expand_bn", **bn)
            h = b.emit(a["act"], [h], "expand_act")
        conv = {"out": hidden, "k": a["k"]} | ({"s": a["s"]} if a["s"] != 1 else {})
        pads = mbconv_dw_pads(*b.type_of(h).shape[2:], a["k"], a["s"], a["pad"])
        if pads != (a["k"] // 2,) * 4:
            conv["pad"] = list(pads)
        h = b.emit("conv2d", [h], "dw", **conv, groups=hidden)
        h = b.emit("batch_norm", [h], "dw_bn", **bn)
        h = b.emit(a["act"], [h], "dw_act")
        if r:
            h = b.emit("se", [h], "se", reduce=r, act=se_act(a), gate=a["se_gate"])
        h = b.emit("conv2d", [h], "project", out=a["out"])
        return b.emit("batch_norm", [h], "project_bn", **bn)


LIGHTNL_NORMS = ("none", "l2")
LIGHTNL_NORM_EPS = 1e-6     # inside the square root: a zero query or key stays zero


def lightnl_shapes(x: TensorType, r: float, s: int) -> tuple[int, int, int]:
    """(compact channels floor(r*C), positions H*W, strided positions h'*w') of LightNL on ``x``."""
    _, c, h, w = x.shape
    return lightnl_channels(c, r), h * w, math.ceil(h / s) * math.ceil(w / s)


def lightnl_matmul_macs(x: TensorType, r: float, s: int) -> dict[str, int]:
    """Per-image MACs of LightNL's two matmul orders (method.md section 1)."""
    c = x.shape[1]
    rc, hw, hws = lightnl_shapes(x, r, s)
    return {"affinity_first": hw * hws * rc + hw * hws * c,
            "key_value_first": hws * rc * c + hw * rc * c}


def lightnl_order(x: TensorType, r: float, s: int) -> str:
    """The cheaper matmul order for LightNL on ``x``; a tie goes to key-value first."""
    m = lightnl_matmul_macs(x, r, s)
    return "affinity_first" if m["affinity_first"] < m["key_value_first"] else "key_value_first"


@register_op
class LightNL(OpDef):
    composite = True
    name = "lightnl"
    doc = ("Lightweight non-local block (AutoNL): y = q @ (k^T @ v) / (H*W) with q, k the first "
           "floor(r*C) channels, k and v strided by s, no softmax, no embeddings; "
           "z = x + BN(depthwise3x3(y)) with BN gamma starting at 0. insert=false is the identity. "
           "norm=\"l2\" scales each query and key position to unit length over its floor(r*C) channels "
           "first (cosine affinities in [-1, 1]): y is then at most max|v| instead of cubic in x, "
           "which keeps stacked blocks finite; it costs O(r*C*H*W) elementwise work, no MACs.")
    attrs = {
        "r": AttrSpec("float", 0.25, doc="channel ratio of queries and keys"),
        "s": AttrSpec("int", 1, doc="spatial stride of keys and values"),
        "norm": AttrSpec("str", "none", one_of=LIGHTNL_NORMS,
                         doc="none: the paper's product; l2: unit-length queries and keys"),
        "insert": AttrSpec("bool", True, doc="false: the block is absent (identity, no cost)"),
        **_bn_specs(),
    }

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank == 4, f"lightnl expects NCHW, got {x}")
        expect(0 < a["r"] <= 1, f"r must be in (0, 1], got {a['r']}")
        expect(a["s"] >= 1, f"s must be positive, got {a['s']}")
        expect(lightnl_channels(x.shape[1], a["r"]) >= 1,
               f"r={a['r']} of {x.shape[1]} channels leaves no query channel")
        return x

    def cost(self, inputs, out, a):
        if not a["insert"]:
            return Cost()
        x = inputs[0]
        n, c, h, w = x.shape
        mm = n * min(lightnl_matmul_macs(x, a["r"], a["s"]).values())
        return Cost(macs=mm + n * 9 * h * w * c, params=11 * c, lightnl_macs=mm)

    def lower(self, b, inputs, a):
        (x,) = inputs
        if not a["insert"]:
            return x
        t = b.type_of(x)
        _, c, h, w = t.shape
        rc, hw, hws = lightnl_shapes(t, a["r"], a["s"])
        # Reshapes keep the batch dim as -1 so that backends may run other batch sizes.
        q = b.emit("slice", [x], "q", axis=1, end=rc)
        xs = x
        if a["s"] > 1:
            xs = b.emit("slice", [xs], "stride_h", axis=2, step=a["s"])
            xs = b.emit("slice", [xs], "stride_w", axis=3, step=a["s"])
        k = b.emit("slice", [xs], "k", axis=1, end=rc)
        q = b.emit("reshape", [q], "q_flat", shape=[-1, rc, hw])
        kt = b.emit("reshape", [k], "k_flat", shape=[-1, rc, hws])
        if a["norm"] == "l2":
            q = b.emit("l2_normalize", [q], "q_unit", axis=1, eps=LIGHTNL_NORM_EPS)
            kt = b.emit("l2_normalize", [kt], "k_unit", axis=1, eps=LIGHTNL_NORM_EPS)
        kt = b.emit("permute", [kt], "k_t", dims=[0, 2, 1])
        v = b.emit("reshape", [xs], "v_flat", shape=[-1, c, hws])
        # Channel-major layout: Q = q^T [rC, HW], K = k^T [rC, h'w'], V = v^T [C, h'w'].
        # y = q @ (k^T @ v) gives y^T = (V @ K^T) @ Q  (key-value first, [C, rC] then [C, HW]);
        # y = (q @ k^T) @ v gives y^T = V @ (K^T @ Q)  (affinity first, [h'w', HW] then [C, HW]).
        # Either way the only transpose is K^T.
        if lightnl_order(t, a["r"], a["s"]) == "key_value_first":
            kv = b.emit("matmul", [v, kt], "kv")
            y = b.emit("matmul", [kv, q], "y")
        else:
            aff = b.emit("matmul", [kt, q], "affinity")
            y = b.emit("matmul", [v, aff], "y")
        y = b.emit("scale", [y], "normalize", factor=1.0 / (h * w))
        y = b.emit("reshape", [y], "y_map", shape=[-1, c, h, w])
        y = b.emit("conv2d", [y], "dw", out=c, k=3, groups=c)
        y = b.emit("batch_norm", [y], "bn", **_bn_attrs(a["eps"], a["momentum"], zero_init=True))
        return b.emit("add", [x, y], "residual")


@register_op
class NonLocal(OpDef):
    composite = True
    name = "non_local"
    doc = ("Conventional non-local block (Wang et al. 2018, dot-product form): theta, phi, g are "
           "1x1 convs C -> ratio*C with bias; y = g @ (phi^T @ theta) / (H*W); "
           "z = x + BN(conv1x1(y)) with BN gamma starting at 0.")
    attrs = {"ratio": AttrSpec("float", 0.5, doc="embedding width as a fraction of C"), **_bn_specs()}

    @staticmethod
    def inner(c: int, a) -> int:
        return int(math.floor(c * a["ratio"]))

    def infer(self, inputs, a):
        (x,) = inputs
        expect(x.rank == 4, f"non_local expects NCHW, got {x}")
        expect(0 < a["ratio"] <= 1 and self.inner(x.shape[1], a) >= 1,
               f"ratio {a['ratio']} leaves no embedding channel")
        return x

    def cost(self, inputs, out, a):
        n, c, h, w = inputs[0].shape
        m, hw = self.inner(c, a), h * w
        macs = 3 * hw * c * m + 2 * hw * hw * m + hw * m * c
        return Cost(macs=n * macs, params=3 * (c * m + m) + m * c + 2 * c)

    def lower(self, b, inputs, a):
        (x,) = inputs
        _, c, h, w = b.type_of(x).shape
        m, hw = self.inner(c, a), h * w
        flat = {}
        for part in ("theta", "phi", "g"):
            e = b.emit("conv2d", [x], part, out=m, bias=True)
            flat[part] = b.emit("reshape", [e], f"{part}_flat", shape=[-1, m, hw])
        phi_t = b.emit("permute", [flat["phi"]], "phi_t", dims=[0, 2, 1])
        aff = b.emit("matmul", [phi_t, flat["theta"]], "affinity")   # [N, HW_j, HW_i]
        y = b.emit("matmul", [flat["g"], aff], "y")                   # [N, m, HW_i]
        y = b.emit("scale", [y], "normalize", factor=1.0 / hw)
        y = b.emit("reshape", [y], "y_map", shape=[-1, m, h, w])
        y = b.emit("conv2d", [y], "out", out=c)
        y = b.emit("batch_norm", [y], "bn", **_bn_attrs(a["eps"], a["momentum"], zero_init=True))
        return b.emit("add", [x, y], "residual")
