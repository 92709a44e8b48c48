"""The ``onnx`` backend: ``model.onnx`` (fp32, BN folded) checked in onnxruntime against
torch, optionally ``model.int8.onnx`` (static int8); runners are onnxruntime sessions."""
from __future__ import annotations

from pathlib import Path

from ..base import Backend, register_backend
from .options import OnnxOptions


@register_backend
class OnnxBackend(Backend):
    name = "onnx"
    doc = "ONNX (opset 17+) for onnxruntime, fp32 and optionally int8"
    Options = OnnxOptions

    def compile(self, model, out, options, log):
        from .compile import compile_onnx
        return compile_onnx(model, out, self.check_options(options), log=log)

    def options_with_data(self, options, data):
        if options.get("calib_data") is None and data is not None:
            return {**options, "calib_data": data}
        return options

    def run_options(self, data):
        return {"int8": True, "calib_data": data}   # int8 calibrated and checked on the run's own data

    def load(self, folder):
        """onnxruntime sessions on the folder's models, each checked against the folder's
        manifest.json (size and sha256) and loaded from the bytes that were checked."""
        from autonl.ir import AutonlError

        from ..manifest import read_manifest, verified_bytes
        from .runtime import run, session
        folder = Path(folder)
        manifest = read_manifest(folder)
        runners = {}
        for label, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
            if file in manifest["files"] or (folder / file).exists():
                sess = session(verified_bytes(folder, file, manifest), name=str(folder / file))
                runners[label] = lambda x, s=sess: run(s, x)
        if not runners:
            raise AutonlError(f"{folder}: no model.onnx (make one with autonl compile --backend onnx --out {folder})")
        return runners

    def latency_timer(self, model, threads, options, rpc=None):
        """The fp32 model of :meth:`compile` (BN folded, LightNL in its cheaper order) in an
        onnxruntime session with ``threads`` intra-op threads; wall time around each run."""
        import onnxruntime

        from autonl.ir import AutonlError

        from ..latency.timing import wall_timer
        from ..loading import deploy_model, reference_input
        from ..manifest import cpu_name
        from .export import export_onnx
        from .runtime import session
        if rpc is not None:
            raise AutonlError("--rpc times on a TVM RPC server: use it with --backend tvm")
        o = self.check_options(options)
        if o.int8:
            raise AutonlError("latency of int8 models is not measured (they need calibration data); time the fp32 "
                              "model, or autonl compile --int8 and compare the folder's runners")
        sess = session(export_onnx(deploy_model(model, fold_bn=o.fold_bn), opset=o.opset),
                       threads=threads, shared=True)
        feed = {sess.get_inputs()[0].name: reference_input(model.graph, batch=1)}
        provenance = {"backend": "onnx", "runtime": "onnxruntime", "runtime_version": onnxruntime.__version__,
                      "target": "host", "cpu": cpu_name(), "threads": threads,
                      "compiled": "fp32, BN folded" if o.fold_bn else "fp32, BN kept",
                      "clock": "wall time around InferenceSession.run",
                      "thread_pool": f"one shared intra-op pool of {threads} thread(s), spinning (onnxruntime's default)"}
        return wall_timer(lambda: sess.run(None, feed)), provenance
