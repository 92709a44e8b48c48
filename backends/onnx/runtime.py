"""onnxruntime sessions, accuracy over a dataset, int8 static quantisation and timing."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from autonl.ir import AutonlError


_SHARED_POOL: list[int] = []     # the size of this process's shared intra-op pool, once made


def shared_pool(threads: int) -> None:
    """Make this process's one shared onnxruntime thread pool of ``threads`` threads (once).

    Timing uses it instead of a pool per session: every session's pool spins for a while
    after each run, so a second session timed right after the first (a latency table
    interleaves dozens) shares its cores with the first one's spinning threads and measures
    up to twice as slow. One shared pool is what a single deployed session has: ``threads``
    threads, spinning, no neighbours."""
    if not _SHARED_POOL:
        from onnxruntime.capi._pybind_state import set_global_thread_pool_sizes
        try:
            set_global_thread_pool_sizes(threads, 1)
        except Exception as e:  # noqa: BLE001  (onnxruntime's Fail)
            raise AutonlError(f"onnxruntime's shared thread pool: {str(e).strip()[:160]}") from None
        _SHARED_POOL.append(threads)
    elif _SHARED_POOL[0] != threads:
        raise AutonlError(f"this process already times onnxruntime with {_SHARED_POOL[0]} thread(s) (its thread pool "
                          f"is made once); time {threads} thread(s) in another process")


def session(model: onnx.ModelProto | bytes | str | Path, threads: int | None = None,
            name: str | None = None, shared: bool = False, spin: bool = False) -> ort.InferenceSession:
    """A CPU session on a model, its serialized bytes (``name``: the file they came from, for
    messages) or a file; a model that onnxruntime cannot load gets one line. ``shared``: run
    on the process's shared pool of ``threads`` threads (:func:`shared_pool`), for timing.
    ``spin``: a pool of its own that spins between runs, as a deployed session's does
    (onnxruntime's default), for timing beside other runtimes in blocks of calls."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if shared:
        shared_pool(threads or os.cpu_count() or 1)
        opts.use_per_session_threads = False
    elif _SHARED_POOL:
        # once the process has its shared pool, onnxruntime refuses a session with a pool of
        # its own ("use_per_session_threads must be false when using a global thread pool"):
        # a check after timing in the same command (run's report) runs on the shared pool
        opts.use_per_session_threads = False
    else:
        # not timed: threads that sleep when idle, so that a session used for a check (parity,
        # accuracy) does not spin beside the torch threads of the same command (autonl.backends.cpu)
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        src = model.SerializeToString()
    elif isinstance(model, (bytes, bytearray)):
        src = bytes(model)
    else:
        src = str(model)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        what = name or (str(model) if isinstance(model, (str, Path)) else "the model")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AutonlError(f"{what}: onnxruntime cannot load it: {first[:200]}") from None


def optimized_op_types(model: onnx.ModelProto) -> list[str]:
    """The op types of ``model`` as onnxruntime runs it on the CPU after its graph
    optimizations (the optimized graph it writes with ``optimized_model_filepath``), in order;
    shows, for one, that Transpose + MatMul became ``FusedMatMul``."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3    # not the warning that an NCHWc-optimized file is CPU-specific
    with tempfile.TemporaryDirectory(prefix="autonl-ort-") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def batches(loader, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) as numpy from a torch DataLoader, at most ``limit`` images."""
    seen = 0
    for x, y in loader:
        if limit is not None and seen >= limit:
            return
        x, y = x.numpy(), y.numpy()
        if limit is not None:
            x, y = x[:limit - seen], y[:limit - seen]
        seen += len(y)
        yield np.ascontiguousarray(x, dtype=np.float32), y


def accuracy(sess: ort.InferenceSession, data: Iterable[tuple[np.ndarray, np.ndarray]], desc: str = "") -> dict:
    correct = total = 0
    for x, y in tqdm(data, desc=desc or "eval", unit="batch", leave=False, disable=not desc):
        correct += int((run(sess, x).argmax(1) == y).sum())
        total += len(y)
    return {"accuracy": correct / max(total, 1), "images": total}


class Calibration:
    """onnxruntime's CalibrationDataReader over a list of input batches."""

    def __init__(self, input_name: str, data: list[np.ndarray]):
        self.input_name, self.data, self.i = input_name, data, 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        self.i += 1
        return {self.input_name: self.data[self.i - 1]}

    def rewind(self):
        self.i = 0


def calibration_batches(sess: ort.InferenceSession, data: Iterable[np.ndarray], chunk: int = 16) -> tuple[list, int]:
    """Equal-sized calibration batches of the images whose fp32 logits are finite, and how
    many were dropped. LightNL is cubic in its input (q k^T v), so a few images can drive
    stacked blocks to inf; one such image would make every min/max range infinite."""
    kept, dropped = [], 0
    for x in data:
        ok = np.isfinite(run(sess, x)).all(axis=1)
        dropped += int((~ok).sum())
        kept.append(x[ok])
    allx = np.concatenate(kept) if kept else np.zeros((0,), np.float32)
    size = min(chunk, len(allx))
    return [allx[i:i + size] for i in range(0, len(allx) - size + 1, size)] if size else [], dropped


@dataclass(frozen=True)
class Int8Scheme:
    """How :func:`quantize_int8` quantises a model (``doc``: its line for a manifest).

    ``format``: onnxruntime's ``qdq`` (QuantizeLinear/DequantizeLinear around float ops, fused
    into int8 kernels when a session loads the model) or ``qoperator`` (int8 ops in the file);
    int8 weights ``per_channel`` or per tensor; ``op_types``: the op types quantised (None:
    every type onnxruntime can); ``fp32_silu``: SiLU (``x * Sigmoid(x)``) stays fp32, as one
    ``com.microsoft.QuickGelu`` node (the kernel onnxruntime itself fuses SiLU into; left as
    Sigmoid and Mul, the DequantizeLinear before them is duplicated per consumer and the
    fusion no longer happens) instead of a ``QLinearSigmoid`` and a ``QLinearMul``;
    ``fp32_convs``: ``depthwise`` (grouped), ``depthwise+act`` (grouped, with the activation
    that follows) or ``spatial`` (every conv that is not 1x1, the stem too) convs stay fp32;
    ``fp32_stride``: every node whose output is at most that
    stride from the input (its height times width at least the input's over stride squared:
    the early, high-resolution layers, where int8 depthwise convs and SiLU cost the most)
    stays fp32 (with ``early_if_silu``: only in a model with SiLU activations, whose int8
    form costs more than its fp32 one); ``fp32_logits``: the node that computes the logits
    (the last Gemm, MatMul or Conv before the output) stays fp32; ``exclude``: name globs
    of nodes kept in fp32."""

    doc: str
    format: str = "qdq"
    per_channel: bool = True
    op_types: tuple[str, ...] | None = None
    fp32_silu: bool = False
    fp32_convs: str = ""
    fp32_stride: int = 0
    early_if_silu: bool = False
    fp32_logits: bool = False
    exclude: tuple[str, ...] = ()
    extra_options: tuple[tuple[str, object], ...] = ()

    def describe(self, per_channel: bool | None = None) -> str:
        pc = self.per_channel if per_channel is None else per_channel
        fmt = "QDQ" if self.format == "qdq" else "QOperator"
        return (f"{fmt}, int8 weights per {'channel' if pc else 'tensor'}, uint8 activations"
                + (f"; {self.doc}" if self.doc else ""))


# Timed against each other by benchmarks/int8_speed.py (issue #38), by name.
INT8_SCHEMES: dict[str, Int8Scheme] = {
    "all": Int8Scheme("every op onnxruntime quantises"),
    "keep-lightnl-fp32": Int8Scheme("LightNL nodes in fp32", exclude=("lightnl_*",)),
    "conv-only": Int8Scheme("only Conv and Gemm quantised", op_types=("Conv", "Gemm")),
    "all-qoperator": Int8Scheme("every op onnxruntime quantises", format="qoperator"),
    "all-per-tensor": Int8Scheme("every op onnxruntime quantises", per_channel=False),
    "fp32-silu": Int8Scheme("SiLU in fp32 (QuickGelu)", fp32_silu=True),
    "fp32-dw": Int8Scheme("depthwise convs in fp32", fp32_convs="depthwise"),
    "fp32-silu-dw": Int8Scheme("SiLU (QuickGelu) and depthwise convs in fp32", fp32_silu=True,
                               fp32_convs="depthwise"),
    "fp32-silu-spatial": Int8Scheme("SiLU (QuickGelu) and every conv that is not 1x1 in fp32", fp32_silu=True,
                                    fp32_convs="spatial"),
    "fp32-silu-spatial-lightnl": Int8Scheme("SiLU (QuickGelu), convs that are not 1x1 and LightNL in fp32",
                                            fp32_silu=True, fp32_convs="spatial", exclude=("lightnl_*",)),
    "fp32-stride2": Int8Scheme("layers at stride 2 or less in fp32", fp32_stride=2),
    "fp32-stride4": Int8Scheme("layers at stride 4 or less in fp32", fp32_stride=4),
    "fp32-stride4-silu-spatial": Int8Scheme("layers at stride 4 or less, SiLU (QuickGelu) and convs that are not 1x1 "
                                            "in fp32", fp32_stride=4, fp32_silu=True, fp32_convs="spatial"),
    "fp32-stride8": Int8Scheme("layers at stride 8 or less in fp32", fp32_stride=8),
    "fp32-early-silu": Int8Scheme("in a model with SiLU, the layers at stride 4 or less in fp32", fp32_stride=4,
                                  early_if_silu=True),
    "fp32-early8-silu": Int8Scheme("in a model with SiLU, the layers at stride 8 or less in fp32", fp32_stride=8,
                                   early_if_silu=True),
    "all-fp32-logits": Int8Scheme("every op onnxruntime quantises but the one that computes the logits",
                                  fp32_logits=True),
    "fp32-early8-silu-logits": Int8Scheme("in a model with SiLU, the layers at stride 8 or less in fp32; the node "
                                          "that computes the logits in fp32", fp32_stride=8, early_if_silu=True,
                                          fp32_logits=True),
    "fp32-early8-silu-dwact-logits": Int8Scheme("in a model with SiLU, the layers at stride 8 or less in fp32; depthwise "
                                                "convs with their activation and the node that computes the logits in "
                                                "fp32", fp32_stride=8, early_if_silu=True, fp32_convs="depthwise+act",
                                                fp32_logits=True),
}
# The default (issue #38; benchmarks/results/int8_speed.txt, int8_accuracy_*.txt): in a network
# with SiLU, the layers up to stride 8 stay fp32 (int8 SiLU, a QLinearSigmoid and a
# QLinearMul, and int8 depthwise convs on large, narrow maps cost more than their fp32
# kernels), and so does the node computing the logits (uint8 logits of a 10-class head move
# the argmax: on the quick start's digits network the int8 logits' relative RMS error went
# from 0.118 with every op quantised to 0.051, top-1 agreement with fp32 from 93.9% to
# 96.9%). On a 2-vCPU Xeon (AVX-512 VNNI), 224x224, batch 1: AutoNL-S int8 at 0.82x fp32 and
# AutoNL-L at 0.88x at 1 thread (every op quantised: 1.00x and 1.10x); MobileNetV2 (ReLU6,
# no SiLU: quantised whole but its logits) at 0.58x. The compile falls back to a more
# faithful scheme when this one loses more than a point (backends/onnx/compile.py).
DEFAULT_INT8_SCHEME = "fp32-early8-silu-logits"


def int8_scheme(scheme: str | Int8Scheme = DEFAULT_INT8_SCHEME) -> Int8Scheme:
    if isinstance(scheme, Int8Scheme):
        return scheme
    if scheme not in INT8_SCHEMES:
        raise AutonlError(f"unknown int8 scheme '{scheme}'; known: {', '.join(INT8_SCHEMES)}")
    return INT8_SCHEMES[scheme]


def silu_pairs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The (Sigmoid, Mul) node pairs that compute SiLU, ``x * sigmoid(x)`` (a Mul of a
    Sigmoid's output and that Sigmoid's own input, the Sigmoid used by nothing else); not
    SE's gate (``x * sigmoid(s)``)."""
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in graph.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    sigmoids = {n.output[0]: n for n in graph.node if n.op_type == "Sigmoid"}
    pairs = []
    for n in graph.node:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for a, b in (n.input, n.input[::-1]):
            s = sigmoids.get(a)
            if s is not None and s.input[0] == b and uses.get(a) == 1:
                pairs.append((s, n))
                break
    return pairs


def fuse_silu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each SiLU (:func:`silu_pairs`) as one
    ``com.microsoft.QuickGelu`` (alpha 1) node, named and with the output of its Mul."""
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    pairs = silu_pairs(model.graph)
    if not pairs:
        return model
    sig = {s.name for s, _ in pairs}
    mul = {m.name: s.input[0] for s, m in pairs}
    nodes = []
    for n in model.graph.node:
        if n.name in sig and n.op_type == "Sigmoid":
            continue
        if n.name in mul and n.op_type == "Mul":
            n = helper.make_node("QuickGelu", [mul[n.name]], [n.output[0]], name=n.name, domain="com.microsoft",
                                 alpha=1.0)
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def fp32_conv_nodes(graph: onnx.GraphProto, which: str) -> list[str]:
    """Names of the Conv nodes that ``which`` (``depthwise``: grouped; ``spatial``: every
    kernel that is not 1x1) keeps in fp32."""
    if which not in ("", "depthwise", "depthwise+act", "spatial"):
        raise AutonlError(f"unknown fp32 conv kind '{which}'; known: depthwise, depthwise+act, spatial")
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    names = []
    for n in graph.node:
        if n.op_type != "Conv" or not which:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        kernel = shapes.get(n.input[1], ())[2:]
        if group > 1 or (which == "spatial" and any(k != 1 for k in kernel)):
            names.append(n.name)
    if which == "depthwise+act":
        names += [n.name for n in activations_after(graph, names)]
    return names


_ACTIVATIONS = ("Relu", "Clip", "HardSwish", "HardSigmoid", "QuickGelu", "LeakyRelu")


def activations_after(graph: onnx.GraphProto, names: list[str]) -> list[onnx.NodeProto]:
    """The activation nodes applied to the outputs of the nodes ``names``: a Relu, Clip,
    HardSwish, QuickGelu, ..., or a SiLU's Sigmoid and Mul (:func:`silu_pairs`)."""
    outputs = {o for n in graph.node if n.name in names for o in n.output}
    acts = [n for n in graph.node if n.op_type in _ACTIVATIONS and n.input and n.input[0] in outputs]
    for sig, mul in silu_pairs(graph):
        if sig.input[0] in outputs:
            acts += [sig, mul]
    return acts


def logit_nodes(graph: onnx.GraphProto) -> list[str]:
    """The name of the node that computes the logits: the last Gemm, MatMul or Conv on the
    way back from the graph's first output through ops that only reshape or add (Flatten,
    Reshape, Squeeze, Identity, Add); none if there is no such node."""
    producer = {o: n for n in graph.node for o in n.output}
    name = graph.output[0].name
    for _ in range(len(graph.node)):
        n = producer.get(name)
        if n is None:
            return []
        if n.op_type in ("Gemm", "MatMul", "Conv"):
            return [n.name]
        if n.op_type not in ("Flatten", "Reshape", "Squeeze", "Identity", "Add"):
            return []
        name = n.input[0]
    return []


def early_nodes(graph: onnx.GraphProto, stride: int) -> list[str]:
    """Names of the nodes of ``graph`` (shapes inferred, nodes in topological order) that
    compute the early layers: a node whose output is a feature map at most ``stride`` from
    the input (height x width >= the input's / stride**2), and a node without a spatial
    output (a LightNL's reshapes and matmuls, an SE's pooled vector) whose inputs all come
    from early nodes or the input, so that the fp32 part has no int8 islands."""
    shapes = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    inp = shapes.get(graph.input[0].name, [])
    if len(inp) != 4 or not inp[2] or not inp[3]:
        raise AutonlError("int8 fp32_stride needs an NCHW input of known height and width")
    least = inp[2] * inp[3] / stride ** 2
    consts = {i.name for i in graph.initializer}
    early = {graph.input[0].name}
    names = []
    for n in graph.node:
        if n.op_type == "Constant":
            consts.update(n.output)
            continue
        shape = shapes.get(n.output[0]) if n.output else None
        if shape and len(shape) == 4 and shape[2] and shape[3] and shape[2] * shape[3] > 1:
            is_early = shape[2] * shape[3] >= least
        else:
            acts = [i for i in n.input if i and i not in consts]
            is_early = bool(acts) and all(i in early for i in acts)
        if is_early:
            early.update(n.output)
            names.append(n.name)
    return names


# The ops on the way from a vector to the denominator it is divided by (its norm): a square,
# a reduction, an epsilon, a root.
_DENOMINATOR_PATH = {"Mul", "Add", "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "Sqrt", "Pow", "Max",
                     "Clip", "Abs"}


def denominator_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes that compute a denominator and apply it: for each ``Reciprocal``
    (and each ``Div``'s divisor), the chain of elementwise ops and reductions that feeds it
    back to a square (``x * x``) or a tensor used elsewhere, and the ``Mul`` nodes that use
    the reciprocal. LightNL's unit-length step (``x / sqrt(sum(x*x) + eps)``) is one. In
    uint8 a small sum of squares rounds to 0, whose reciprocal root is ``1/sqrt(eps)``: the
    quick start's network lost 15 points of digits accuracy that way (issue #38), so these
    nodes stay fp32 in every scheme; they act on one value per token and cost little."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    kept: dict[str, None] = {}      # in the order found
    keep = lambda n: kept.setdefault(n.name)  # noqa: E731
    for n in graph.node:
        if n.op_type == "Reciprocal":
            start = n.input[0]
            keep(n)
            for c in consumers.get(n.output[0], []):
                if c.op_type == "Mul":
                    keep(c)
        elif n.op_type == "Div" and len(n.input) == 2:
            start = n.input[1]
            keep(n)
        else:
            continue
        stack = [start]
        while stack:
            p = producer.get(stack.pop())
            if p is None or p.name in kept or p.op_type not in _DENOMINATOR_PATH:
                continue
            keep(p)
            if p.op_type == "Mul" and len(p.input) == 2 and p.input[0] == p.input[1]:
                continue    # the square: its input is the vector itself
            stack.extend(i for i in p.input if i in producer and len(consumers.get(i, [])) == 1)
    return list(kept)


def flat_tensors(model_path: str, calibration: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """The float tensors of the model at ``model_path`` whose values do not vary over
    ``calibration`` (max - min below 1e-5 of their magnitude), with their (min, max): a
    LightNL on a 1x1 map, whose one token's affinity with itself is always 1. Batch by
    batch: only each tensor's running min and max are kept."""
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    graph = onnx.load(model_path).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="autonl-ranges-") as tmp:
        aug = os.path.join(tmp, "outputs.onnx")
        modify_model_output_intermediate_tensors(model_path, aug)
        sess = ort.InferenceSession(aug, providers=["CPUExecutionProvider"])
        # the tool saves each tensor as <name>_ReshapedSavedOutput (flattened)
        names = [o.name.removesuffix("_ReshapedSavedOutput") for o in sess.get_outputs()]
        for x in calibration:
            for name, a in zip(names, sess.run(None, {graph.input[0].name: x})):
                if name in consts or a.dtype.kind != "f" or a.size == 0:
                    continue
                lo[name] = min(lo.get(name, np.inf), float(a.min()))
                hi[name] = max(hi.get(name, -np.inf), float(a.max()))
    return {name: (lo[name], hi[name]) for name in lo
            if np.isfinite(lo[name]) and np.isfinite(hi[name])
            and hi[name] - lo[name] <= 1e-5 * max(abs(lo[name]), abs(hi[name]))}


def histogram_ranges(model_path: str, calibration: list[np.ndarray], method, op_types: list[str] | None,
                     cache: str) -> None:
    """Calibrate ``model_path`` with onnxruntime's histogram ``method`` (entropy, percentile)
    into ``cache`` (the calibration cache ``quantize_static`` then reads), giving the
    tensors whose values do not vary (:func:`flat_tensors`) their min and max: onnxruntime's
    histograms cannot bin them ("Too many bins for data range") and would stop."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    flat = flat_tensors(model_path, calibration)
    with tempfile.TemporaryDirectory(prefix="autonl-calib-") as tmp:
        calibrator = create_calibrator(Path(model_path), op_types or sorted({*QLinearOpsRegistry, *QDQRegistry}),
                                       augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                       calibrate_method=method)
        calibrator.tensors_to_calibrate -= set(flat)
        name = onnx.load(model_path).graph.input[0].name
        for batch in calibration:      # the histograms grow batch by batch: one batch's tensors in memory
            calibrator.collect_data(Calibration(name, [batch]))
        ranges = calibrator.compute_data()
        del calibrator
    data = dict(ranges.items())
    data.update({name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                 for name, (lo, hi) in flat.items()})
    save_tensors_data(TensorsData(ranges.calibration_method, data), cache)


def quantize_int8(model: onnx.ModelProto, calibration: list[np.ndarray], method: str = "minmax",
                  per_channel: bool | None = None, exclude: Iterable[str] = (),
                  scheme: str | Int8Scheme = DEFAULT_INT8_SCHEME) -> tuple[onnx.ModelProto, list[str]]:
    """Static int8 quantisation (int8 weights, uint8 activations) with onnxruntime's tools,
    calibrated on ``calibration`` (a list of equal-sized input batches), by ``scheme`` (a name
    in :data:`INT8_SCHEMES` or an :class:`Int8Scheme`; ``per_channel``: overrides its own).
    Nodes whose names match a glob in ``exclude`` (``lightnl_*``) stay in fp32 as well.
    Returns the model and the names of the nodes that ``exclude`` kept in fp32 (the
    scheme's own fp32 ops, such as SiLU, are in its :meth:`Int8Scheme.describe`)."""
    import fnmatch

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise AutonlError(f"unknown calibration method '{method}'; known: {', '.join(methods)}")
    if not calibration:
        raise AutonlError("int8 quantisation needs at least one calibration batch")
    name = scheme if isinstance(scheme, str) else "custom"
    scheme = int8_scheme(scheme)
    if per_channel is None:
        per_channel = scheme.per_channel
    with tempfile.TemporaryDirectory(prefix="autonl-quant-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        patterns = list(exclude)
        graph = onnx.load(pre).graph
        has_silu = bool(silu_pairs(graph))
        excluded = [n.name for n in graph.node if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]
        if patterns and not excluded:
            raise AutonlError(f"--int8-exclude {' '.join(patterns)} matches no node of the model")
        fp32 = set(excluded)
        fp32.update(n.name for n in graph.node if any(fnmatch.fnmatchcase(n.name, p) for p in scheme.exclude))
        if scheme.fp32_silu:
            # after quant_pre_process: its onnxruntime pass would not keep a contrib op it
            # does not know the shape of
            onnx.save(fuse_silu(onnx.load(pre)), pre)
            graph = onnx.load(pre).graph
            fp32.update(n.name for n in graph.node if n.op_type == "QuickGelu")
        fp32.update(denominator_nodes(graph))
        if scheme.fp32_logits:
            fp32.update(logit_nodes(graph))
        fp32.update(fp32_conv_nodes(graph, scheme.fp32_convs))
        if scheme.fp32_stride and (has_silu or not scheme.early_if_silu):
            fp32.update(early_nodes(graph, scheme.fp32_stride))
        cache = os.path.join(tmp, "calibration.json")
        if method != "minmax":
            histogram_ranges(pre, calibration, methods[method], list(scheme.op_types or ()) or None, cache)
        quantize_static(pre, out, Calibration(model.graph.input[0].name, calibration),
                        quant_format=QuantFormat.QDQ if scheme.format == "qdq" else QuantFormat.QOperator,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(scheme.op_types) if scheme.op_types else None,
                        calibrate_method=methods[method], nodes_to_exclude=sorted(fp32),
                        calibration_cache_path=cache,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       **dict(scheme.extra_options)})
        quantized = onnx.load(out)
        early = bool(scheme.fp32_stride) and (has_silu or not scheme.early_if_silu)
        what = scheme.describe(per_channel) + ("" if early or not scheme.fp32_stride else
                                               " (no SiLU here: no layer kept in fp32)")
        onnx.helper.set_model_props(quantized, {**{p.key: p.value for p in quantized.metadata_props},
                                                "autonl.int8.scheme": name, "autonl.int8.format": what})
        return quantized, excluded
