"""The importer's fallback path: ``torch.fx.symbolic_trace``, one IR primitive per traced
module, function or method call (used where ``torch.export`` fails)."""
from __future__ import annotations

import operator
from typing import Any

from autonl.ir import AutonlError

from .common import (UnsupportedOpError, _bn_attrs, _conv_attrs, _Emitter, _is_global_mean, _module_path,
                            _where)


class _TraceFailed(Exception):
    pass


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
    simple = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid", nn.Hardswish: "hardswish",
              nn.Hardsigmoid: "hardsigmoid"}
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
            F.sigmoid: "sigmoid", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid"}
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
