"""onnxruntime sessions, accuracy over a dataset, int8 static quantisation and timing."""
from __future__ import annotations

import os
import tempfile
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


def quantize_int8(model: onnx.ModelProto, calibration: list[np.ndarray], method: str = "minmax",
                  per_channel: bool = True, exclude: Iterable[str] = ()) -> tuple[onnx.ModelProto, list[str]]:
    """Static int8 quantisation (QDQ, int8 weights per channel, uint8 activations) with
    onnxruntime's tools, calibrated on ``calibration`` (a list of equal-sized input batches).
    Nodes whose names match a glob in ``exclude`` (``lightnl_*``) stay in fp32. Returns the
    model and the names of the nodes kept in fp32."""
    import fnmatch

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise AutonlError(f"unknown calibration method '{method}'; known: {', '.join(methods)}")
    if not calibration:
        raise AutonlError("int8 quantisation needs at least one calibration batch")
    with tempfile.TemporaryDirectory(prefix="autonl-quant-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        patterns = list(exclude)
        excluded = [n.name for n in onnx.load(pre).graph.node
                    if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]
        if patterns and not excluded:
            raise AutonlError(f"--int8-exclude {' '.join(patterns)} matches no node of the model")
        quantize_static(pre, out, Calibration(model.graph.input[0].name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method], nodes_to_exclude=excluded,
                        calibration_cache_path=os.path.join(tmp, "calibration.json"),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return onnx.load(out), excluded
