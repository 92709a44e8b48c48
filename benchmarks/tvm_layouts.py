"""NCHW against NHWC for the TVM backend's tuned convolutions, one convolution at a time.

Each convolution of AutoNL-S below (with its bias, and its swish where the network has one,
sigmoid through the backend's fast_exp lowering) is built as its own Relax module, once in
NCHW and once through Relax's ConvertLayout to NHWC/OHWI with the weights laid out up front
(as ``to_relax`` does for ``--layout nhwc``), tuned by the backend's own tuner (``--trials``
on average per task: the NHWC module has two small activation-transform tasks besides the
convolution, and the budget follows the untuned time, so its convolution gets more of it;
the trials are printed), and
the best measured time of the convolution kernel is printed. In a whole NHWC network the
transforms sit only at the input, around LightNL's reshapes and before the classifier, so the
transform column is what the isolated module pays, not what the network pays.

    python benchmarks/tvm_layouts.py [--trials 32] [--out runs/tvm-layouts] [--json F]
"""
from __future__ import annotations

import shutil
from pathlib import Path

import harness
import numpy as np

from autonl.backends.tvm import get_target
from autonl.backends.tvm.compile import _nhwc, pre_tuning
from autonl.backends.tvm.lowering import fast_sigmoid
from autonl.backends.tvm.schedule import Plan
from autonl.backends.tvm.tuning import tune

# name, in channels, out channels, kernel, stride, input size, groups, swish
SHAPES = [("1x1 1152->320 @7x7", 1152, 320, 1, 1, 7, 1, False),
          ("dw 5x5 s2 240 @28x28", 240, 240, 5, 2, 28, 240, True),
          ("stem 3x3 s2 3->32 @224x224", 3, 32, 3, 2, 224, 1, True),
          ("1x1 24->144 @56x56", 24, 144, 1, 1, 56, 1, True)]


def conv_module(cin: int, cout: int, k: int, s: int, hw: int, groups: int, swish: bool):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(1, cin, hw, hw), dtype="float32"))
    w = relax.Var("w", relax.TensorType(shape=(cout, cin // groups, k, k), dtype="float32"))
    b = relax.Var("b", relax.TensorType(shape=(1, cout, 1, 1), dtype="float32"))
    with bb.function("main", [x, w, b], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=s, padding=k // 2, groups=groups))
            y = bb.emit(relax.op.add(y, b))
            if swish:
                y = bb.emit(relax.op.multiply(y, relax.op.sigmoid(y)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def main() -> None:
    import tvm

    ap = harness.parser(__doc__)
    ap.add_argument("--trials", type=int, default=32, help="trials on average per task")
    ap.add_argument("--out", default="runs/tvm-layouts", help="where the tuning databases go")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    target = tvm.target.Target(get_target("host").target_dict())
    rows = []
    print(f"{'convolution':28s} {'layout':6s} {'kernel us':>10s} {'trials':>7s} {'transforms us':>14s}")
    for name, *shape in SHAPES:
        for layout in ("nchw", "nhwc"):
            work = Path(args.out) / f"{name.replace(' ', '_').replace('>', '')}-{layout}"
            shutil.rmtree(work, ignore_errors=True)
            mod = conv_module(*shape)
            if layout == "nhwc":       # as to_relax lays a tuned build out: weights transformed once, up front
                params = [np.zeros([int(d) for d in p.ty.shape], "float32") for p in mod["main"].params[1:]]
                mod, _ = _nhwc(mod, params)
            tune(pre_tuning(fast_sigmoid(mod), target, True), target, str(work), args.trials, progress=False)
            tasks = Plan.load(str(work)).tasks
            conv = next(t for t in tasks if "conv2d" in t.name)
            other = sum(t.best_us * t.calls for t in tasks if t is not conv)
            rows.append({"conv": name, "layout": layout, "kernel_us": conv.best_us, "trials": conv.done,
                         "transforms_us": other})
            print(f"{name:28s} {layout:6s} {conv.best_us:10.1f} {conv.done:7d} {other:14.1f}", flush=True)
    if args.json:
        harness.write_json(args.json, rows)


if __name__ == "__main__":
    main()
