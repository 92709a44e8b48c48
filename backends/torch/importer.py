"""Import a PyTorch ``nn.Module`` into the IR: ``import_module(module, input_shape)``.

The module is traced with ``torch.fx.symbolic_trace``; where symbolic tracing fails
(data-dependent control flow, unsupported Python), with ``torch.export`` instead, whose ATen
ops are mapped the same way. Each traced call becomes one IR primitive:

==========================  ===================================================
IR op                       PyTorch
==========================  ===================================================
conv2d                      nn.Conv2d (square kernel and stride, padding k//2, dilation 1,
                            zero padding)
batch_norm                  nn.BatchNorm2d (running statistics, affine)
relu, relu6, silu, sigmoid  nn.ReLU/ReLU6/SiLU/Sigmoid, nn.Hardtanh(0, 6), their functional
                            and tensor-method forms
add, mul, scale             ``+``, ``*`` (``*`` by a Python number is ``scale``), torch.add/mul
global_avg_pool             nn.AdaptiveAvgPool2d(1), F.adaptive_avg_pool2d(x, 1),
                            x.mean((2, 3)) (keepdim either way)
flatten                     nn.Flatten, torch.flatten(x, 1), x.view/reshape(n, -1)
linear                      nn.Linear
dropout                     nn.Dropout, F.dropout (identity at inference)
(nothing)                   nn.Identity, x.contiguous(), x.clone()
==========================  ===================================================

Node names follow the module path (``features.3.conv.0`` becomes ``features_3_conv_0``);
the weights go along in the returned :class:`~autonl.ir.Model` (numpy, keyed
``<node>.<tensor>`` as the torch backend's state dict). Anything else is an :class:`UnsupportedOpError` that names the module
path and the op and lists what is supported. The ``import`` pipeline (shape inference,
``fold-mbconv``) then folds inverted-residual blocks into ``mbconv`` nodes.
"""
from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np

from autonl.ir import AutonlError, Graph, Model, TensorType
from autonl.passes import PassManager

SUPPORTED = ("nn.Conv2d", "nn.BatchNorm2d", "nn.ReLU", "nn.ReLU6", "nn.Hardtanh(0, 6)", "nn.SiLU", "nn.Sigmoid",
             "nn.AdaptiveAvgPool2d(1)", "nn.Flatten", "nn.Linear", "nn.Dropout", "nn.Identity", "+", "*",
             "torch.add", "torch.mul", "torch.flatten", "F.relu", "F.relu6", "F.hardtanh", "F.silu",
             "torch.sigmoid", "F.adaptive_avg_pool2d", "F.dropout",
             "Tensor.mean((2, 3))", "Tensor.view/reshape(n, -1)", "Tensor.relu/sigmoid/flatten/contiguous/clone")


class UnsupportedOpError(AutonlError):
    """A module or function the importer has no IR primitive for."""

    def __init__(self, where: str, what: str, why: str = ""):
        detail = f" ({why})" if why else ""
        super().__init__(f"cannot import {where or 'the top-level module'}: {what} is not supported{detail}; "
                         f"supported: {', '.join(SUPPORTED)}")


def ir_name(path: str) -> str:
    """``features.3.conv.0`` -> ``features_3_conv_0`` (an IR name, and a Python identifier)."""
    name = re.sub(r"\W", "_", path).strip("_") or "node"
    return name if not name[0].isdigit() else f"n{name}"


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
        return name


def _conv_attrs(where: str, w, bias, stride, padding, dilation, groups, padding_mode="zeros") -> dict:
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    k = tuple(w.shape[2:])
    s, p, d = pair(stride), pair(padding) if not isinstance(padding, str) else padding, pair(dilation)
    if k[0] != k[1] or s[0] != s[1]:
        raise UnsupportedOpError(where, "conv2d", f"kernel {k} and stride {s} must be square")
    if d != (1, 1) or padding_mode != "zeros":
        raise UnsupportedOpError(where, "conv2d", f"dilation {d}, padding mode {padding_mode!r}")
    if p != (k[0] // 2, k[0] // 2) and not (p == "same" and s == (1, 1)):
        raise UnsupportedOpError(where, "conv2d", f"padding {p}; the IR's conv2d pads k//2 = {k[0] // 2}")
    attrs = {"out": int(w.shape[0]), "k": int(k[0])}
    if s[0] != 1:
        attrs["s"] = int(s[0])
    if groups != 1:
        attrs["groups"] = int(groups)
    if bias is not None:
        attrs["bias"] = True
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


def import_module(module, input_shape: tuple[int, ...] | list[int] = (1, 3, 224, 224), name: str | None = None,
                  fold_blocks: bool = True) -> Model:
    """The IR model (graph + weights) of ``module`` (eval mode) for inputs of ``input_shape``;
    MBConv blocks folded into ``mbconv`` nodes when ``fold_blocks``."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise AutonlError(f"expected a torch.nn.Module, got {type(module).__name__}")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise AutonlError(f"--input-shape must be N,C,H,W with positive sizes, got {list(input_shape)}")
    module = module.eval()
    example = torch.randn(shape)
    gname = ir_name(name or type(module).__name__)
    try:
        em = _from_fx(module, example, gname)
    except UnsupportedOpError:
        raise
    except _TraceFailed as e:
        em = _from_export(module, example, gname, str(e))
    return PassManager("import" if fold_blocks else "import-no-fold").run(Model(em.graph, em.params))


class _TraceFailed(Exception):
    pass


# -- torch.fx --------------------------------------------------------------------------------
def _from_fx(module, example, gname: str) -> _Emitter:
    import torch
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001  (any tracing failure: fall back to torch.export)
        raise _TraceFailed(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as e:  # noqa: BLE001
        raise AutonlError(f"running the traced module on an input of shape {list(example.shape)} failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    em = _Emitter(gname, tuple(example.shape))
    env: dict[Any, Any] = {}   # fx node -> IR value name, or a Python constant
    modules = dict(gm.named_modules())

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if env:
                raise AutonlError("the module takes more than one tensor input; the IR importer takes one")
            env[node] = "x"
            continue
        if node.op == "output":
            out = node.args[0]
            if isinstance(out, (tuple, list)):
                if len(out) != 1:
                    raise AutonlError("the module returns several tensors; the IR importer takes one output")
                out = out[0]
            em.graph.outputs = [env[out]]
            continue
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        args = [env.get(a, a) if isinstance(a, fx.Node) else a for a in node.args]
        kwargs = {k: env.get(v, v) if isinstance(v, fx.Node) else v for k, v in node.kwargs.items()}
        if node.op == "get_attr":
            raise UnsupportedOpError(node.target, "a tensor attribute used directly (get_attr)")
        if node.op == "call_module":
            env[node] = _fx_module(em, node.target, modules[node.target], args, shape)
        elif node.op == "call_function":
            env[node] = _fx_function(em, node, node.target, args, kwargs, shape, gm)
        elif node.op == "call_method":
            env[node] = _fx_method(em, node, node.target, args, kwargs, shape)
    return em


def _fx_module(em: _Emitter, path: str, m, args: list, shape) -> str:
    from torch import nn

    x = args[0] if args else None
    if not isinstance(x, str):
        raise UnsupportedOpError(path, f"{type(m).__name__} on a non-tensor input")
    if isinstance(m, nn.Conv2d):
        attrs = _conv_attrs(path, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
        return em.emit("conv2d", [x], path, shape, attrs, {"weight": m.weight, "bias": m.bias})
    if isinstance(m, nn.BatchNorm2d):
        if not m.track_running_stats or m.running_mean is None:
            raise UnsupportedOpError(path, "BatchNorm2d without running statistics")
        w = {"weight": m.weight, "bias": m.bias, "running_mean": m.running_mean, "running_var": m.running_var}
        if not m.affine:
            raise UnsupportedOpError(path, "BatchNorm2d(affine=False)")
        return em.emit("batch_norm", [x], path, shape, _bn_attrs(m.eps, m.momentum), w)
    if isinstance(m, nn.ReLU6) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)):
        return em.emit("relu6", [x], path, shape)
    simple = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}
    for cls, op in simple.items():
        if type(m) is cls:
            return em.emit(op, [x], path, shape)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        if tuple(size) != (1, 1):
            raise UnsupportedOpError(path, f"AdaptiveAvgPool2d({m.output_size})", "only output size 1")
        return em.emit("global_avg_pool", [x], path, shape, {"keepdim": True})
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedOpError(path, f"Flatten({m.start_dim}, {m.end_dim})")
        return em.emit("flatten", [x], path, shape)
    if isinstance(m, nn.Linear):
        attrs = {"out": int(m.out_features)} | ({} if m.bias is not None else {"bias": False})
        return em.emit("linear", [x], path, shape, attrs, {"weight": m.weight, "bias": m.bias})
    if isinstance(m, nn.Dropout):
        return em.emit("dropout", [x], path, shape, {"p": float(m.p)} if m.p else {})
    if isinstance(m, nn.Identity):
        return x
    raise UnsupportedOpError(path, f"module {type(m).__module__}.{type(m).__name__}")


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _where(node) -> str:
    path = _module_path(node)
    return f"{path} ({node.name})" if path else node.name


def _base(node) -> str:
    """A function call's IR name: the module it is called in, then fx's name (``features.2`` +
    ``add`` -> ``features_2_add``)."""
    path = _module_path(node)
    return f"{path}.{node.name}" if path else node.name


def _binary(em: _Emitter, where: str, base: str, op: str, a, b, shape) -> str:
    if isinstance(a, str) and isinstance(b, str):
        return em.emit(op, [a, b], base, shape)
    if op == "mul" and isinstance(a, (int, float)) != isinstance(b, (int, float)):
        x, f = (a, b) if isinstance(a, str) else (b, a)
        return em.emit("scale", [x], base, shape, {"factor": float(f)})
    raise UnsupportedOpError(where, f"{op} of {type(a).__name__} and {type(b).__name__}")


def _fx_function(em: _Emitter, node, fn, args, kwargs, shape, gm) -> str:
    import torch
    import torch.nn.functional as F

    where, base = _where(node), _base(node)
    x = args[0] if args else kwargs.get("input")
    if fn in (operator.add, torch.add, operator.iadd):
        return _binary(em, where, base, "add", args[0], args[1], shape)
    if fn in (operator.mul, torch.mul, operator.imul):
        return _binary(em, where, base, "mul", args[0], args[1], shape)
    acts = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu", torch.sigmoid: "sigmoid",
            F.sigmoid: "sigmoid"}
    if fn in acts:
        return em.emit(acts[fn], [x], base, shape)
    if fn is F.hardtanh:
        lo, hi = (list(args[1:3]) + [kwargs.get("min_val", -1.0), kwargs.get("max_val", 1.0)])[:2] \
            if len(args) >= 3 else (kwargs.get("min_val", -1.0), kwargs.get("max_val", 1.0))
        if (lo, hi) == (0.0, 6.0):
            return em.emit("relu6", [x], base, shape)
        raise UnsupportedOpError(where, f"hardtanh({lo}, {hi})")
    if fn is torch.flatten:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if start != 1 or end != -1:
            raise UnsupportedOpError(where, f"torch.flatten(x, {start}, {end})")
        return em.emit("flatten", [x], base, shape)
    if fn is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise UnsupportedOpError(where, f"adaptive_avg_pool2d(x, {size})")
        return em.emit("global_avg_pool", [x], base, shape, {"keepdim": True})
    if fn is F.dropout:
        p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
        return em.emit("dropout", [x], base, shape, {"p": float(p)} if p else {})
    if fn is torch.mean:
        return _mean(em, where, base, x, args[1:], kwargs, shape)
    raise UnsupportedOpError(where, f"function {getattr(fn, '__module__', '')}.{getattr(fn, '__name__', fn)}")


def _mean(em: _Emitter, where, base, x, rest, kwargs, shape) -> str:
    dims = rest[0] if rest else kwargs.get("dim")
    keep = (rest[1] if len(rest) > 1 else kwargs.get("keepdim", False))
    if dims is None or not _is_global_mean(dims, 4):
        raise UnsupportedOpError(where, f"mean over dims {dims}", "only the spatial mean over (2, 3)")
    return em.emit("global_avg_pool", [x], base, shape, {"keepdim": True} if keep else {})


def _fx_method(em: _Emitter, node, method: str, args, kwargs, shape) -> str:
    where = _where(node)
    x = args[0]
    if method in ("contiguous", "clone"):
        return x
    if method in ("relu", "sigmoid"):
        return em.emit(method, [x], _base(node), shape)
    if method == "mean":
        return _mean(em, where, _base(node), x, args[1:], kwargs, shape)
    if method in ("add", "mul"):
        return _binary(em, where, _base(node), method, x, args[1], shape)
    if method == "flatten":
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        if start != 1 or (len(args) > 2 and args[2] != -1):
            raise UnsupportedOpError(where, f"Tensor.flatten({start})")
        return em.emit("flatten", [x], _base(node), shape)
    if method in ("view", "reshape"):
        if shape is not None and len(shape) == 2:
            return em.emit("flatten", [x], _base(node), shape)
        raise UnsupportedOpError(where, f"Tensor.{method} to a shape other than (n, -1)")
    raise UnsupportedOpError(where, f"method Tensor.{method}")


# -- torch.export ----------------------------------------------------------------------------
def _from_export(module, example, gname: str, fx_error: str) -> _Emitter:
    import torch

    try:
        ep = torch.export.export(module, (example,))
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AutonlError(f"cannot trace {type(module).__name__}: torch.fx failed ({fx_error}) and torch.export "
                          f"failed ({type(e).__name__}: {first[:200]})") from None
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    const = dict(getattr(ep, "constants", {}) or {})
    lookup = {**{k: state.get(v, const.get(v)) for k, v in sig.inputs_to_parameters.items()},
              **{k: state.get(v, const.get(v)) for k, v in sig.inputs_to_buffers.items()}}
    user_inputs = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    em = _Emitter(gname, tuple(example.shape))
    env: dict[str, Any] = {}
    aten = torch.ops.aten

    def val(a):
        if isinstance(a, torch.fx.Node):
            if a.name in env:
                return env[a.name]
            if a.name in lookup:
                return lookup[a.name]
        return a

    for node in ep.graph_module.graph.nodes:
        if node.op == "placeholder":
            if node.name in user_inputs:
                env[node.name] = "x"
            continue
        if node.op == "output":
            outs = [o for o in node.args[0] if o is not None]
            em.graph.outputs = [env[outs[0].name]]
            continue
        if node.op != "call_function":
            continue
        fn, where, base = node.target, _where(node), _export_name(node)
        meta = node.meta.get("val")
        shape = tuple(meta.shape) if hasattr(meta, "shape") else None
        a = [val(x) for x in node.args]
        if fn is operator.getitem:
            env[node.name] = env[node.args[0].name] if node.args[1] == 0 else None
            continue
        if fn in (aten.conv2d.default, aten.convolution.default):
            w, b = a[1], a[2] if len(a) > 2 else None
            stride, padding, dilation = (a + [1, 0, 1])[3:6] if fn is aten.conv2d.default else a[3:6]
            groups = (a[6] if len(a) > 6 else 1) if fn is aten.conv2d.default else a[8]
            attrs = _conv_attrs(where, w, b, stride, padding, dilation, groups)
            env[node.name] = em.emit("conv2d", [a[0]], base, shape, attrs, {"weight": w, "bias": b})
        elif fn in (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default):
            if fn is aten.batch_norm.default:
                x, w, b, mean, var, _training, momentum, eps = a[:8]
            else:
                x, w, b, mean, var, momentum, eps = a[:7]
            env[node.name] = em.emit("batch_norm", [x], base, shape, _bn_attrs(eps, momentum),
                                     {"weight": w, "bias": b, "running_mean": mean, "running_var": var})
        elif fn in (aten.relu.default, aten.relu_.default):
            env[node.name] = em.emit("relu", [a[0]], base, shape)
        elif fn in (aten.hardtanh.default, aten.hardtanh_.default) and tuple(a[1:3]) == (0.0, 6.0):
            env[node.name] = em.emit("relu6", [a[0]], base, shape)
        elif fn in (aten.silu.default, aten.silu_.default):
            env[node.name] = em.emit("silu", [a[0]], base, shape)
        elif fn is aten.sigmoid.default:
            env[node.name] = em.emit("sigmoid", [a[0]], base, shape)
        elif fn in (aten.add.Tensor, aten.add_.Tensor):
            env[node.name] = _binary(em, where, base, "add", a[0], a[1], shape)
        elif fn in (aten.mul.Tensor, aten.mul_.Tensor):
            env[node.name] = _binary(em, where, base, "mul", a[0], a[1], shape)
        elif fn is aten.mean.dim:
            env[node.name] = _mean(em, where, base, a[0], a[1:], {}, shape)
        elif fn is aten.adaptive_avg_pool2d.default and tuple(a[1]) == (1, 1):
            env[node.name] = em.emit("global_avg_pool", [a[0]], base, shape, {"keepdim": True})
        elif fn in (aten.flatten.using_ints, aten.view.default, aten.reshape.default) and shape is not None \
                and len(shape) == 2:
            env[node.name] = em.emit("flatten", [a[0]], base, shape)
        elif fn is aten.linear.default:
            w, b = a[1], a[2] if len(a) > 2 else None
            attrs = {"out": int(w.shape[0])} | ({} if b is not None else {"bias": False})
            env[node.name] = em.emit("linear", [a[0]], base, shape, attrs, {"weight": w, "bias": b})
        elif fn in (aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default):
            env[node.name] = a[0]
        else:
            raise UnsupportedOpError(where, f"ATen op {fn}")
    return em


def _export_name(node) -> str:
    return _module_path(node) or node.name


__all__ = ["UnsupportedOpError", "import_module", "ir_name", "SUPPORTED"]
