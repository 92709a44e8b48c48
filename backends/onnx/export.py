"""Export a deployment model (primitives and their weights) to ONNX, straight from the IR.

Each primitive op has one emitter (``@onnx_op``) that appends ONNX nodes; values and nodes
keep the IR's names (``mbconv_3.expand``), weights become initializers named like the
state dict (``mbconv_3.expand.weight``). LightNL arrives here already lowered by
``lower-composites`` into Slice / Reshape / Transpose / MatMul in its cheaper order, so the
ONNX graph holds the same two matmuls the cost model counts. The batch dim is symbolic
(``batch``): every reshape keeps it as -1, so one model runs any batch size.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from autonl.ir import AutonlError, Model, Node, verify
from autonl.ir.ops import conv_pads, get_op
from autonl.ir.registry import Registry

OPSET = 17
BATCH = "batch"
INT64_MAX = 2**63 - 1

Emitter = Callable[["OnnxBuilder", Node, list[str]], None]
ONNX_EMITTERS: Registry[Emitter] = Registry("op for the ONNX backend", plural="ops with an ONNX form")


def onnx_op(name: str) -> Callable[[Emitter], Emitter]:
    """Register the ONNX emitter of primitive op ``name``."""
    return ONNX_EMITTERS.decorator(name)


def onnx_ops() -> list[str]:
    return ONNX_EMITTERS.names()


class OnnxBuilder:
    def __init__(self, model: Model):
        self.graph = model.graph
        self.weights = model.weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._const = 0
        self._bound: set[str] = set()

    def attrs(self, node: Node) -> dict:
        return get_op(node.op).full_attrs(node.attrs)

    def param(self, node: Node, tensor: str, required: bool = True) -> str | None:
        key = f"{node.name}.{tensor}"
        if key not in self.weights:
            if required:
                raise AutonlError(f"node %{node.name} ({node.op}): no bound weight '{key}'; "
                                  f"export a model (graph + weights), not a bare graph")
            return None
        if key not in self._bound:
            self._bound.add(key)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(self.weights[key]), key))
        return key

    def const(self, node: Node, value, dtype) -> str:
        """A Constant node (not an initializer): frontends that turn initializers into
        parameters (TVM's keep_params_in_input) still see Clip bounds and shapes as constants."""
        name = f"{node.name}.const{self._const}"
        self._const += 1
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name)))
        return name

    def emit(self, op_type: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output


def export_onnx(model: Model, opset: int = OPSET, dynamic_batch: bool = True) -> onnx.ModelProto:
    """The deployment model as a checked ONNX model (onnx.checker full check, shape inference)."""
    graph = model.graph
    verify(graph, allow_relaxed=False)
    composite = sorted({n.op for n in graph if get_op(n.op).composite})
    if composite:
        raise AutonlError(f"graph '{graph.name}' still has composite ops ({', '.join(composite)}); "
                          f"lower it first (the deploy pipeline, or the lower-composites pass)")
    b = OnnxBuilder(model)
    for name in graph.topological_order():
        node = graph.nodes[name]
        ONNX_EMITTERS.get(node.op)(b, node, list(node.inputs))

    def value(name: str, t) -> onnx.ValueInfoProto:
        shape = [BATCH if dynamic_batch and i == 0 else d for i, d in enumerate(t.shape)]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    g = helper.make_graph(b.nodes, graph.name, [value(n, t) for n, t in graph.inputs.items()],
                          [value(n, graph.type_of(n)) for n in graph.outputs], b.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="autonl")
    model.ir_version = min(model.ir_version, 8)   # readable by onnxruntime releases of the last years
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


# -- emitters ------------------------------------------------------------------------------
@onnx_op("conv2d")
def _conv(b: OnnxBuilder, node: Node, x: list[str]) -> None:
    a = b.attrs(node)
    ins = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if a["bias"] else [])
    b.emit("Conv", ins, node.name, node.name, kernel_shape=[a["k"], a["k"]], strides=[a["s"], a["s"]],
           pads=list(conv_pads(a)), group=a["groups"])     # ONNX's order: top, left, bottom, right


@onnx_op("batch_norm")
def _bn(b: OnnxBuilder, node: Node, x: list[str]) -> None:
    ins = [x[0]] + [b.param(node, t) for t in ("weight", "bias", "running_mean", "running_var")]
    b.emit("BatchNormalization", ins, node.name, node.name, epsilon=float(b.attrs(node)["eps"]))


for _ir, _onnx in (("relu", "Relu"), ("sigmoid", "Sigmoid"), ("dropout", "Identity")):
    onnx_op(_ir)(lambda b, node, x, t=_onnx: b.emit(t, x[:1], node.name, node.name))
for _ir, _onnx in (("add", "Add"), ("mul", "Mul"), ("matmul", "MatMul")):
    onnx_op(_ir)(lambda b, node, x, t=_onnx: b.emit(t, x, node.name, node.name))


@onnx_op("relu6")
def _relu6(b, node, x):
    lo, hi = b.const(node, 0.0, np.float32), b.const(node, 6.0, np.float32)
    b.emit("Clip", [x[0], lo, hi], node.name, node.name)


@onnx_op("hardswish")
def _hardswish(b, node, x):
    b.emit("HardSwish", x[:1], node.name, node.name)


@onnx_op("hardsigmoid")
def _hardsigmoid(b, node, x):
    b.emit("HardSigmoid", x[:1], node.name, node.name, alpha=1.0 / 6.0, beta=0.5)


@onnx_op("silu")
def _silu(b, node, x):
    s = b.emit("Sigmoid", x, f"{node.name}.sigmoid", f"{node.name}.sigmoid")
    b.emit("Mul", [x[0], s], node.name, node.name)


@onnx_op("scale")
def _scale(b, node, x):
    b.emit("Mul", [x[0], b.const(node, b.attrs(node)["factor"], np.float32)], node.name, node.name)


@onnx_op("l2_normalize")
def _l2_normalize(b, node, x):
    """x * 1/sqrt(ReduceSum(x*x) + eps): plain ops every runtime (and TVM's importer) has;
    ONNX's LpNormalization has no eps and gives NaN for a zero vector."""
    a, n = b.attrs(node), node.name
    sq = b.emit("Mul", [x[0], x[0]], f"{n}.square", f"{n}.square")
    total = b.emit("ReduceSum", [sq, b.const(node, [a["axis"]], np.int64)], f"{n}.sum", f"{n}.sum", keepdims=1)
    total = b.emit("Add", [total, b.const(node, a["eps"], np.float32)], f"{n}.eps", f"{n}.eps")
    inv = b.emit("Reciprocal", [b.emit("Sqrt", [total], f"{n}.sqrt", f"{n}.sqrt")], f"{n}.inv", f"{n}.inv")
    b.emit("Mul", [x[0], inv], n, n)


@onnx_op("global_avg_pool")
def _pool(b, node, x):
    if b.attrs(node)["keepdim"]:
        b.emit("GlobalAveragePool", x, node.name, node.name)
        return
    pooled = b.emit("GlobalAveragePool", x, f"{node.name}.pool", f"{node.name}.pool")
    b.emit("Flatten", [pooled], node.name, node.name, axis=1)


@onnx_op("flatten")
def _flatten(b, node, x):
    start = b.attrs(node)["start"]
    if start == 1:
        b.emit("Flatten", x, node.name, node.name, axis=1)
    else:  # torch.flatten(x, start): keep dims before start (0 = copy), merge the rest
        b.emit("Reshape", [x[0], b.const(node, [0] * start + [-1], np.int64)], node.name, node.name)


@onnx_op("reshape")
def _reshape(b, node, x):
    b.emit("Reshape", [x[0], b.const(node, b.attrs(node)["shape"], np.int64)], node.name, node.name)


@onnx_op("permute")
def _permute(b, node, x):
    b.emit("Transpose", x, node.name, node.name, perm=list(b.attrs(node)["dims"]))


@onnx_op("linear")
def _linear(b, node, x):
    a = b.attrs(node)
    w, bias = b.param(node, "weight"), b.param(node, "bias") if a["bias"] else None
    if b.graph.type_of(x[0]).rank == 2:
        b.emit("Gemm", [x[0], w] + ([bias] if bias else []), node.name, node.name, transB=1)
        return
    wt = b.emit("Transpose", [w], f"{node.name}.weight_t", f"{node.name}.weight_t", perm=[1, 0])
    if not bias:
        b.emit("MatMul", [x[0], wt], node.name, node.name)
        return
    mm = b.emit("MatMul", [x[0], wt], f"{node.name}.matmul", f"{node.name}.matmul")
    b.emit("Add", [mm, bias], node.name, node.name)


@onnx_op("slice")
def _slice(b, node, x):
    a = b.attrs(node)
    end = min(a["end"], INT64_MAX)
    ins = [x[0]] + [b.const(node, [v], np.int64) for v in (a["start"], end, a["axis"], a["step"])]
    b.emit("Slice", ins, node.name, node.name)
