"""Relax rewrites applied to every module the TVM backend builds, before tuning or legalizing.

:func:`fold_transposes_into_matmuls`: a ``matmul`` whose operand is a ``permute_dims`` that
swaps the last two axes becomes one matmul kernel that reads that operand transposed in
place (TOPI's ``batch_matmul`` / ``matmul`` with ``transpose_a`` / ``transpose_b``), so the
transposed copy is never materialised. LightNL (``lower-composites``) has exactly one such
transpose, K^T: key-value first computes ``V @ K^T`` (a transposed right operand), affinity
first ``K^T @ Q`` (a transposed left operand); the classifier's ``Gemm`` arrives as
``x @ W^T``. TVM ships ``relax.transform.FuseTransposeMatmul`` for the right operand only;
the left one is what affinity-first LightNL needs, and one rewrite covers both.

Before this rewrite, LightNL's K^T was a kernel of its own: untuned, a strided-write copy;
tuned, MetaSchedule cannot do much with pure data movement (2.0 ms for one transpose at
56x56 in AutoNL-S). onnxruntime does the same on its side: its ``MatMulTransposeFusion``
turns Transpose + MatMul into ``FusedMatMul`` with ``transA`` / ``transB``
(:func:`autonl.backends.onnx.runtime.optimized_op_types` shows it), so the ONNX file keeps
the plain, portable Transpose + MatMul.
"""
from __future__ import annotations


def _swapped_last_two(call) -> bool:
    nd = call.args[0].ty.ndim
    if nd < 2:
        return False
    axes = call.attrs.axes
    if axes is None:
        return nd == 2
    want = list(range(nd))
    want[-1], want[-2] = want[-2], want[-1]
    return [int(a) for a in axes] == want


def fold_transposes_into_matmuls(mod):
    """``mod`` with every ``matmul(permute_dims(a), b)`` / ``matmul(a, permute_dims(b))`` (last
    two axes swapped, 2-D or 3-D, same rank, static shapes) rewritten into one transposed-operand
    matmul kernel; transposes left without a use are removed."""
    import tvm
    from tvm import relax, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    matmul_op, permute_op = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.permute_dims")

    @mutator
    class Folder(PyExprMutator):
        def _transposed(self, arg):
            if not isinstance(arg, relax.Var):
                return None
            bound = self.lookup_binding(arg)
            if isinstance(bound, relax.Call) and bound.op == permute_op and _swapped_last_two(bound):
                return bound.args[0]
            return None

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op != matmul_op:
                return call
            a, b = call.args
            ta, tb = self._transposed(a), self._transposed(b)
            if ta is None and tb is None:
                return call
            na, nb = a.ty.ndim, b.ty.ndim
            if na != nb or na not in (2, 3) or call.attrs.out_dtype not in (None, "", a.ty.dtype):
                return call
            x, y = ta if ta is not None else a, tb if tb is not None else b
            if na == 3:
                # batch_matmul's batch dims must be static and agree (no broadcasting here)
                bx, by = x.ty.shape[0], y.ty.shape[0]
                if not (hasattr(bx, "value") and hasattr(by, "value") and int(bx) == int(by)):
                    return call
                return self.builder_.call_te(topi.nn.batch_matmul, x, y, transpose_a=ta is not None,
                                             transpose_b=tb is not None,
                                             primfunc_name_hint=_name(ta is not None, tb is not None))
            return self.builder_.call_te(topi.nn.matmul, x, y, transpose_a=ta is not None,
                                         transpose_b=tb is not None,
                                         primfunc_name_hint=_name(ta is not None, tb is not None))

    folder = Folder(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gvar, folder.visit_expr(func))
    return relax.transform.DeadCodeElimination()(folder.builder_.get())


def _name(ta: bool, tb: bool) -> str:
    return f"matmul_{'T' if ta else 'N'}{'T' if tb else 'N'}"


def fast_sigmoid(mod):
    """``mod`` with every float32 ``sigmoid`` computed as 1 / (1 + fast_exp(-x)).

    TVM lowers ``sigmoid`` to LLVM's ``exp``, which stays a scalar libm call per element on
    x86 and ARM alike: in AutoNL's swish activations (x * sigmoid(x) after every expand and
    depthwise convolution) it kept the 112x112 depthwise kernels at about 2 ms each whatever
    MetaSchedule tried. TOPI's ``fast_exp`` is a polynomial with a power-of-two scaling, plain
    arithmetic that vectorizes (relative error about 1e-7; onnxruntime's own Swish/QuickGelu
    kernel is a vectorized approximation too). Parity with torch and onnxruntime is still
    checked to 1e-4 on every build."""
    import tvm
    from tvm import relax, te, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    sigmoid_op = tvm.ir.Op.get("relax.sigmoid")

    def te_fast_sigmoid(x):
        e = topi.fast_exp(topi.negative(x))
        one = tvm.tirx.const(1.0, x.dtype)
        return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="fast_sigmoid")

    @mutator
    class Sigmoids(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call, relax.Call) and call.op == sigmoid_op and call.args[0].ty.dtype == "float32":
                return self.builder_.call_te(te_fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")
            return call

    rewriter = Sigmoids(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
