"""The importer's main path: ``torch.export`` in eval mode, decomposed to core ATen, mapped
op by op into IR primitives (the table is in ``autonl.backends.torch.importer``)."""
from __future__ import annotations

from typing import Any

from autonl.ir import AutonlError

from .common import (UnsupportedOpError, _bn_attrs, _conv_attrs, _Emitter, _is_global_mean, _module_path,
                            _Val, _where, ir_name)


# Ops kept whole by the decomposition: the IR has a primitive for each, and their core-ATen
# forms (clamps, divisions, transposed matrix products) would have to be pieced back together.
def _preserved_ops() -> tuple:
    import torch
    aten = torch.ops.aten
    return (aten.hardswish.default, aten.hardsigmoid.default, aten.silu.default, aten.linear.default)


class _Padded:
    """A zero-padded value (``nn.ZeroPad2d``, ``F.pad``, TF's "same" padding) waiting for the
    convolution that reads it: the IR has no pad op, so the padding goes into that conv."""

    def __init__(self, x: str, pads: tuple[int, int, int, int], where: str):
        self.x, self.pads, self.where = x, pads, where


class _Pending:
    """Part of a hand-written hard sigmoid or hard swish (timm's ``F.relu6(x + 3.) / 6.``,
    ``x * F.relu6(x + 3) / 6``, or their core-ATen clamps), waiting for the rest:

    ``shift``: x + 3; ``relu``: max(x + 3, 0); ``relu6``: k * relu6(x + 3); ``swish``:
    k * x * relu6(x + 3). With k = 1/6 the last two are ``hardsigmoid(x)`` and ``hardswish(x)``."""

    def __init__(self, kind: str, x: str, where: str, k: float = 1.0):
        self.kind, self.x, self.where, self.k = kind, x, where, k


def _is_sixth(k: float) -> bool:
    return abs(k * 6.0 - 1.0) < 1e-9


class _ExportFailed(Exception):
    pass


def _exported(module, example):
    """``torch.export`` of the module, decomposed to core ATen except ``_preserved_ops``."""
    import torch

    try:
        ep = torch.export.export(module, (example,))
        table = torch.export.default_decompositions()
        for op in _preserved_ops():
            table.pop(op, None)
        return ep.run_decompositions(table)
    except Exception as e:  # noqa: BLE001  (any export failure: the caller falls back to torch.fx)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _ExportFailed(f"{type(e).__name__}: {first[:200]}") from None


def _from_export(module, example, gname: str) -> _Emitter:
    from torch.export.graph_signature import InputKind, OutputKind

    ep = _exported(module, example)
    sig = ep.graph_signature
    users_in = [s.arg.name for s in sig.input_specs if s.kind == InputKind.USER_INPUT]
    users_out = [s for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT]
    if len(users_in) != 1:
        raise AutonlError(f"{type(module).__name__} takes {len(users_in)} tensor inputs; the IR importer takes one")
    if len(users_out) != 1:
        raise AutonlError(f"{type(module).__name__} returns {len(users_out)} tensors; the IR importer takes a "
                          f"model with one output (return the logits only)")
    if not all(hasattr(s.arg, "name") for s in users_out):
        raise AutonlError(f"{type(module).__name__} returns a constant, not a tensor computed from its input")
    state, const = dict(ep.state_dict), dict(getattr(ep, "constants", {}) or {})
    env: dict[str, Any] = {}    # fx node name -> IR value name, constant tensor, Python value, _Padded, _Pending
    for s in sig.input_specs:
        if s.kind != InputKind.USER_INPUT:
            env[s.arg.name] = state[s.target] if s.target in state else const.get(s.target)
    env[users_in[0]] = _Val("x")
    em = _Emitter(gname, tuple(example.shape))
    mapper = _AtenMapper(em, env)
    for node in ep.graph_module.graph.nodes:
        if node.op == "call_function":
            env[node.name] = mapper.map(node)
    out = env[users_out[0].arg.name]
    out = mapper.value(out)
    if not isinstance(out, str):
        raise AutonlError(f"{type(module).__name__} returns a constant, not a tensor computed from its input")
    em.graph.outputs = [str(out)]
    return em


def _export_name(node, em: _Emitter) -> str:
    """The IR name of an ATen node: its module path (``features.3.conv.0`` -> ``features_3_conv_0``)
    for the first node a module emits; later ones add the source function's name."""
    path = _module_path(node)
    source = node.name
    chain = node.meta.get("from_node") or []
    if chain and getattr(chain[0], "name", None):
        source = chain[0].name
    if not path:
        return source
    return path if ir_name(path) not in em.graph else f"{path}.{source}"


class _AtenMapper:
    """One ATen call at a time into IR nodes (see the table in the module docstring)."""

    def __init__(self, em: _Emitter, env: dict):
        import torch
        self.em, self.env, self.torch = em, env, torch

    # values -------------------------------------------------------------------------------
    def arg(self, a):
        fx = self.torch.fx
        if isinstance(a, fx.Node):
            return self.env.get(a.name)
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    def value(self, v) -> Any:
        """``v`` as an IR value where an op reads a tensor: a pending hard sigmoid/swish is
        finished here (only with its 1/6 scale); padding outside a convolution is refused."""
        if isinstance(v, _Padded):
            raise UnsupportedOpError(v.where, "ATen op aten.constant_pad_nd.default",
                                     "zero padding is imported only where a convolution reads it")
        if isinstance(v, _Pending):
            if v.kind in ("relu6", "swish") and _is_sixth(v.k):
                op = "hardsigmoid" if v.kind == "relu6" else "hardswish"
                return self.em.emit(op, [v.x], f"{v.where.split(' ')[0]}.{op}", self.em.graph.type_of(v.x).shape)
            raise UnsupportedOpError(v.where, "a constant offset or clamp",
                                     "the IR has no add-constant op; relu6(x + 3) / 6 (hard sigmoid) and "
                                     "x * relu6(x + 3) / 6 (hard swish) are imported")
        return v

    def is_const(self, v) -> bool:
        if isinstance(v, (_Val, _Padded, _Pending)):
            return False
        return v is None or isinstance(v, (int, float, bool, str, self.torch.Tensor, self.torch.dtype,
                                           self.torch.device, self.torch.memory_format, self.torch.layout)) or \
            (isinstance(v, (list, tuple)) and all(self.is_const(x) for x in v))

    # the map ------------------------------------------------------------------------------
    def map(self, node):
        import operator

        torch = self.torch
        fn, where = node.target, _where(node)
        args = [self.arg(a) for a in node.args]
        kwargs = {k: self.arg(v) for k, v in node.kwargs.items()}
        meta = node.meta.get("val")
        if isinstance(meta, (tuple, list)) and meta and isinstance(meta[0], torch.Tensor):
            meta = meta[0]      # batch norm's (output, saved mean, saved invstd)
        shape = tuple(int(d) for d in meta.shape) if isinstance(meta, torch.Tensor) else None
        if fn is operator.getitem:
            src = args[0]
            return src[args[1]] if isinstance(src, (list, tuple)) else src if args[1] == 0 else None
        if all(self.is_const(a) for a in args) and all(self.is_const(v) for v in kwargs.values()):
            with torch.no_grad():       # weights reshaped or transposed, constants made: computed here
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001
                    raise UnsupportedOpError(where, f"ATen op {fn} on constants", f"{type(e).__name__}: {e}") \
                        from None
        base = _export_name(node, self.em)
        handler = _ATEN.get(fn)
        if handler is None:
            original = node.meta.get("original_aten")
            via = f" (from {original})" if original is not None and original != fn else ""
            raise UnsupportedOpError(where, f"ATen op {fn}{via}")
        try:
            return handler(self, where, base, shape, args, kwargs)
        except UnsupportedOpError as e:
            if e.aten is not None or "ATen op" in e.what:
                raise
            raise UnsupportedOpError(e.where, e.what, e.why, aten=fn) from None

    def emit(self, op, inputs, base, shape, attrs=None, weights=None, where=""):
        inputs = [self.value(v) for v in inputs]
        if not all(isinstance(v, str) for v in inputs):
            raise UnsupportedOpError(where, f"{op} of a constant tensor", "every input must be computed from the "
                                     "model's input")
        return self.em.emit(op, inputs, base, shape, attrs, weights)


_ATEN: dict = {}


def _aten(*names: str):
    """Register a mapping for ATen overloads named like ``convolution.default``."""
    def wrap(fn):
        import torch
        for name in names:
            packet, _, overload = name.partition(".")
            op = getattr(getattr(torch.ops.aten, packet), overload or "default", None)
            if op is not None:
                _ATEN[op] = fn
        return fn
    return wrap


@_aten("convolution.default")
def _a_conv(m: _AtenMapper, where, base, shape, a, kw):
    x, w, b, stride, padding, dilation, transposed, _out_pad, groups = a[:9]
    if not isinstance(w, m.torch.Tensor) or w.dim() != 4:
        what = f"a {w.dim() - 2}-D convolution" if isinstance(w, m.torch.Tensor) else "weights computed at run time"
        raise UnsupportedOpError(where, "ATen op aten.convolution.default", f"{what}; the IR has 2-D convolutions")
    if transposed:
        raise UnsupportedOpError(where, "ATen op aten.convolution.default", "a transposed convolution")
    pads = (int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1]))
    if isinstance(x, _Padded):
        pads = tuple(p + q for p, q in zip(pads, x.pads))
        x = x.x
    attrs = _conv_attrs(where, w, b, stride, pads, dilation, groups)
    return m.emit("conv2d", [x], base, shape, attrs, {"weight": w, "bias": b}, where)


@_aten("constant_pad_nd.default")
def _a_pad(m: _AtenMapper, where, base, shape, a, kw):
    x, pad = a[0], list(a[1])
    value = a[2] if len(a) > 2 else kw.get("value", 0)
    if value != 0 or len(pad) not in (2, 4) or min(pad) < 0:
        raise UnsupportedOpError(where, "ATen op aten.constant_pad_nd.default",
                                 f"padding {pad} with {value}; only zero padding of H and W before a convolution")
    left, right, top, bottom = (pad + [0, 0])[:4]
    if isinstance(x, _Padded):   # two pads in a row add up
        t, l_, b_, r = x.pads
        x, (top, left, bottom, right) = x.x, (top + t, left + l_, bottom + b_, right + r)
    if not isinstance(m.value(x), str):
        raise UnsupportedOpError(where, "ATen op aten.constant_pad_nd.default", "padding a constant")
    return _Padded(x, (top, left, bottom, right), where)


@_aten("_native_batch_norm_legit_no_training.default")
def _a_bn(m: _AtenMapper, where, base, shape, a, kw):
    x, w, b, mean, var, momentum, eps = a[:7]
    if w is None or b is None:
        raise UnsupportedOpError(where, "batch norm without affine weights", "BatchNorm2d(affine=False)")
    if mean is None or var is None:
        raise UnsupportedOpError(where, "batch norm without running statistics", "track_running_stats=False")
    y = m.emit("batch_norm", [x], base, shape, _bn_attrs(eps, momentum),
               {"weight": w, "bias": b, "running_mean": mean, "running_var": var}, where)
    return (y, None, None)


@_aten("relu.default")
def _a_relu(m, where, base, shape, a, kw):
    return _clamp(m, where, base, shape, a[0], 0.0, None)


@_aten("hardtanh.default")
def _a_hardtanh(m, where, base, shape, a, kw):
    return _clamp(m, where, base, shape, a[0], a[1] if len(a) > 1 else -1.0, a[2] if len(a) > 2 else 1.0)


@_aten("clamp.default")
def _a_clamp(m, where, base, shape, a, kw):
    lo = a[1] if len(a) > 1 else kw.get("min")
    hi = a[2] if len(a) > 2 else kw.get("max")
    return _clamp(m, where, base, shape, a[0], lo, hi)


@_aten("clamp_min.default")
def _a_clamp_min(m, where, base, shape, a, kw):
    return _clamp(m, where, base, shape, a[0], a[1], None)


@_aten("clamp_max.default")
def _a_clamp_max(m, where, base, shape, a, kw):
    return _clamp(m, where, base, shape, a[0], None, a[1])


def _clamp(m: _AtenMapper, where, base, shape, x, lo, hi):
    """clamp(x, lo, hi): relu (0, inf), relu6 (0, 6), or a step of a hand-written hard sigmoid."""
    lo, hi = (None if v is None else float(v) for v in (lo, hi))
    if isinstance(x, _Pending):
        if x.kind == "shift" and (lo, hi) == (0.0, 6.0):
            return _Pending("relu6", x.x, x.where)
        if x.kind == "shift" and (lo, hi) == (0.0, None):
            return _Pending("relu", x.x, x.where)
        if x.kind == "relu" and (lo, hi) == (None, 6.0):
            return _Pending("relu6", x.x, x.where)
    if (lo, hi) == (0.0, None):
        return m.emit("relu", [x], base, shape, where=where)
    if (lo, hi) == (0.0, 6.0):
        return m.emit("relu6", [x], base, shape, where=where)
    raise UnsupportedOpError(where, f"clamp to [{lo}, {hi}]", "relu (0, inf) and relu6 (0, 6) are imported")


for _op, _ir in (("silu", "silu"), ("sigmoid", "sigmoid"), ("hardswish", "hardswish"), ("hardsigmoid", "hardsigmoid")):
    _aten(f"{_op}.default")(lambda m, where, base, shape, a, kw, op=_ir: m.emit(op, [a[0]], base, shape, where=where))


def _scalar(v) -> float | None:
    import torch
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.reshape(()))
    return None


@_aten("add.Tensor", "add.Scalar")
def _a_add(m: _AtenMapper, where, base, shape, a, kw):
    x, y = a[0], a[1]
    alpha = kw.get("alpha", 1)
    if alpha != 1:
        raise UnsupportedOpError(where, f"add with alpha={alpha}")
    c = _scalar(y) if not isinstance(y, (str, _Pending, _Padded)) else None
    if c is None and not isinstance(x, (str, _Pending, _Padded)):
        x, y, c = y, x, _scalar(x)
    if c is not None:
        if c == 3.0 and isinstance(x, str):
            return _Pending("shift", x, where)
        raise UnsupportedOpError(where, f"adding the constant {c:g}", "the IR has no add-constant op")
    return m.emit("add", [x, y], base, shape, where=where)


@_aten("mul.Tensor", "mul.Scalar")
def _a_mul(m: _AtenMapper, where, base, shape, a, kw):
    x, y = a[0], a[1]
    if isinstance(x, _Pending) and isinstance(y, str):
        x, y = y, x
    if isinstance(y, _Pending) and y.kind == "relu6" and isinstance(x, str) and x == y.x:
        return _Pending("swish", x, y.where, y.k)          # x * relu6(x + 3) [/ 6]
    c = _scalar(y) if not isinstance(y, (str, _Pending, _Padded)) else None
    if c is None and not isinstance(x, (str, _Pending, _Padded)):
        x, y, c = y, x, _scalar(x)
    if c is not None:
        return _scaled(m, where, base, shape, x, c)
    if not all(isinstance(v, (str, _Pending, _Padded)) for v in (x, y)):
        raise UnsupportedOpError(where, "multiplying by a constant tensor", "only by a number (scale) or by "
                                 "another computed tensor (mul)")
    return m.emit("mul", [x, y], base, shape, where=where)


@_aten("div.Tensor", "div.Scalar")
def _a_div(m: _AtenMapper, where, base, shape, a, kw):
    c = _scalar(a[1]) if not isinstance(a[1], (str, _Pending, _Padded)) else None
    if c is None or c == 0 or kw.get("rounding_mode") is not None:
        raise UnsupportedOpError(where, "division", "only by a nonzero number")
    return _scaled(m, where, base, shape, a[0], 1.0 / c)


def _scaled(m: _AtenMapper, where, base, shape, x, c: float):
    if isinstance(x, _Pending) and x.kind in ("relu6", "swish"):
        p = _Pending(x.kind, x.x, x.where, x.k * c)
        return m.value(p) if _is_sixth(p.k) else p
    if c == 1.0:
        return x
    return m.emit("scale", [x], base, shape, {"factor": float(c)}, where=where)


@_aten("mean.dim")
def _a_mean(m: _AtenMapper, where, base, shape, a, kw):
    dims = a[1] if len(a) > 1 else kw.get("dim")
    keep = a[2] if len(a) > 2 else kw.get("keepdim", False)
    x = m.value(a[0])
    rank = m.em.graph.type_of(x).rank if isinstance(x, str) else 0
    if dims is None or rank != 4 or not _is_global_mean(dims, 4):
        raise UnsupportedOpError(where, f"mean over dims {dims}", "only the spatial mean over (2, 3)")
    return m.emit("global_avg_pool", [a[0]], base, shape, {"keepdim": True} if keep else {}, where=where)


@_aten("_adaptive_avg_pool2d.default", "adaptive_avg_pool2d.default")
def _a_adaptive_pool(m, where, base, shape, a, kw):
    if tuple(a[1]) != (1, 1):
        raise UnsupportedOpError(where, f"adaptive average pooling to {tuple(a[1])}", "only output size 1")
    return m.emit("global_avg_pool", [a[0]], base, shape, {"keepdim": True}, where=where)


@_aten("view.default", "_unsafe_view.default", "reshape.default", "squeeze.dims", "squeeze.dim", "squeeze.default",
       "unsqueeze.default", "flatten.using_ints")
def _a_view(m: _AtenMapper, where, base, shape, a, kw):
    x = m.value(a[0])
    src = tuple(m.em.graph.type_of(x).shape) if isinstance(x, str) else None
    if src is None or shape is None:
        raise UnsupportedOpError(where, "a reshape of a constant")
    if src == tuple(shape):
        return x
    if len(shape) == 2 and shape[0] == src[0]:
        return m.emit("flatten", [x], base, shape, where=where)
    # keep the batch dim open (-1) where the reshape keeps it, so backends may run other batches
    target = [-1, *shape[1:]] if shape[0] == src[0] else list(shape)
    return m.emit("reshape", [x], base, shape, {"shape": [int(d) for d in target]}, where=where)


@_aten("permute.default")
def _a_permute(m, where, base, shape, a, kw):
    return m.emit("permute", [a[0]], base, shape, {"dims": [int(d) for d in a[1]]}, where=where)


@_aten("linear.default")
def _a_linear(m: _AtenMapper, where, base, shape, a, kw):
    w, b = a[1], a[2] if len(a) > 2 else None
    return _linear(m, where, base, shape, a[0], w, b)


@_aten("addmm.default")
def _a_addmm(m: _AtenMapper, where, base, shape, a, kw):
    if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
        raise UnsupportedOpError(where, "addmm with alpha or beta")
    bias, x, wt = a[0], a[1], a[2]
    return _linear(m, where, base, shape, x, wt.t() if isinstance(wt, m.torch.Tensor) else wt, bias)


@_aten("mm.default")
def _a_mm(m: _AtenMapper, where, base, shape, a, kw):
    x, wt = a[0], a[1]
    return _linear(m, where, base, shape, x, wt.t() if isinstance(wt, m.torch.Tensor) else wt, None)


def _linear(m: _AtenMapper, where, base, shape, x, w, b):
    torch = m.torch
    if not isinstance(w, torch.Tensor) or (b is not None and not isinstance(b, torch.Tensor)):
        raise UnsupportedOpError(where, "a matrix product of two computed tensors", "a linear layer needs "
                                 "constant weights")
    if b is not None and b.dim() != 1:
        raise UnsupportedOpError(where, f"a linear layer with a bias of shape {list(b.shape)}")
    attrs = {"out": int(w.shape[0])} | ({} if b is not None else {"bias": False})
    return m.emit("linear", [x], base, shape, attrs, {"weight": w.contiguous(), "bias": b}, where)


for _op in ("clone.default", "alias.default", "detach.default", "dropout.default", "contiguous.default",
            "lift_fresh_copy.default"):
    _aten(_op)(lambda m, where, base, shape, a, kw: a[0])


@_aten("_to_copy.default")
def _a_to_copy(m: _AtenMapper, where, base, shape, a, kw):
    dtype = kw.get("dtype")
    if dtype not in (None, m.torch.float32):
        raise UnsupportedOpError(where, f"a cast to {dtype}", "the IR computes in float32")
    return a[0]
