"""Import a PyTorch ``nn.Module`` into the IR: ``import_module(module, input_shape)``.

The main path is the graph the PyTorch ecosystem hands to compilers: ``torch.export`` of the
model in eval mode, decomposed to the core ATen opset (``run_decompositions``; hardswish,
hardsigmoid, silu and linear are kept whole, the IR has a primitive for each), then mapped op
by op. So a model imports whatever Python its modules are written in (a BatchNorm subclass
that calls ``F.batch_norm`` and an activation picked by ``getattr``, fused norm+act modules,
drop-path modules that are the identity in eval mode, padding modules): only the ATen ops
it computes matter. Where ``torch.export`` fails, ``torch.fx.symbolic_trace`` is the fallback.

=====================================  ==================================================
IR op                                  ATen (core opset, after decomposition)
=====================================  ==================================================
conv2d                                 convolution (2-D, square kernel and stride, no
                                       dilation); a zero ``constant_pad_nd`` before it
                                       (nn.ZeroPad2d, F.pad, TF "same") joins its padding:
                                       symmetric k//2 is the default, anything else is
                                       ``pad=[top, left, bottom, right]``, exactly
batch_norm                             _native_batch_norm_legit_no_training (nn.BatchNorm2d,
                                       F.batch_norm in eval mode; affine, running statistics)
relu, relu6                            relu, clamp/clamp_min(0), hardtanh/clamp(0, 6)
silu, sigmoid, hardswish, hardsigmoid  silu, sigmoid, hardswish, hardsigmoid; also the
                                       hand-written relu6(x + 3) / 6 and x * relu6(x + 3) / 6
add, mul, scale                        add, mul (by a number: scale), div by a number
global_avg_pool                        mean over (2, 3), adaptive_avg_pool2d to 1
flatten, reshape                       view/reshape/squeeze/unsqueeze/flatten
permute                                permute
linear                                 linear, addmm/mm with constant weights
(nothing)                              clone, alias, detach, dropout, a float32 _to_copy
(computed at import)                   any op on constants only (a transposed weight ...)
=====================================  ==================================================

Node names follow the module path from the export's ``nn_module_stack`` (``features.3.conv.0``
becomes ``features_3_conv_0``; a second op of the same module adds its function's name); the
weights go along in the returned :class:`~autonl.ir.Model` (numpy, keyed ``<node>.<tensor>``
as the torch backend's state dict). Any other op is an :class:`UnsupportedOpError` that
names the module path and the ATen op; a model with more than one input or output is
refused. The ``import`` pipeline (shape inference, ``fuse-activations``, ``fold-mbconv``)
then folds inverted-residual blocks into ``mbconv`` nodes.
"""
from __future__ import annotations

import warnings

from autonl.ir import AutonlError, Model
from autonl.passes import PassManager

from .aten import _ExportFailed, _from_export
from .common import SUPPORTED, UnsupportedOpError, _Emitter, ir_name
from .fx import _from_fx, _TraceFailed


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
    with warnings.catch_warnings():      # torch.export's deprecation notes are not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        em = _trace(module, example, gname)
    return PassManager("import" if fold_blocks else "import-no-fold").run(Model(em.graph, em.params))


def _trace(module, example, gname: str) -> "_Emitter":
    """The export path; torch.fx where torch.export fails."""
    try:
        em = _from_export(module, example, gname)
    except _ExportFailed as e:
        try:
            em = _from_fx(module, example, gname)
        except _TraceFailed as fx_error:
            raise AutonlError(f"cannot trace {type(module).__name__}: torch.export failed ({e}) and torch.fx "
                              f"failed ({fx_error})") from None
    return em


__all__ = ["UnsupportedOpError", "import_module", "ir_name", "SUPPORTED"]
