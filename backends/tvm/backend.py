"""The ``tvm`` backend: a Relax/LLVM library (``model.so`` for the host, ``model.aarch64.so``
for boards) with its weights, optionally MetaSchedule-tuned; the runner is the Relax VM
(host libraries only: an aarch64 library runs on its board, ``autonl deploy``)."""
from __future__ import annotations

from pathlib import Path

from autonl.ir import AutonlError

from ..base import Backend, register_backend
from .options import TvmOptions


@register_backend
class TvmBackend(Backend):
    name = "tvm"
    doc = "TVM Relax library (.so) + params for a CPU target, optionally MetaSchedule-tuned"
    Options = TvmOptions

    def compile(self, model, out, options, log):
        from .compile import compile_tvm
        return compile_tvm(model, out, self.check_options(options), log=log)

    def load(self, folder):
        """The host library as a Relax VM runner; the library and its parameters are checked
        against the folder's manifest.json before anything is loaded."""
        from .compile import vm_runner
        from .remote import library_bytes, load_host_library, load_manifest, load_params
        folder = Path(folder)
        if not (folder / "model.so").is_file():
            raise AutonlError(f"{folder}: no host library model.so (an aarch64 library runs on its board: "
                              "autonl deploy)")
        manifest = load_manifest(folder)
        checked = library_bytes(folder, manifest)
        params = load_params(folder, manifest)
        label = "TVM (tuned)" if manifest.get("tuned") else "TVM (untuned)"
        return {label: vm_runner(load_host_library(folder, manifest, checked), params)}

    def latency_timer(self, model, threads, options, rpc=None):
        """The Relax library of :meth:`compile` (tuned kernels where ``--tuning-dir`` holds a
        database), timed with TVM's ``time_evaluator``: here (host targets, ``threads``
        worker threads) or on an RPC server (built for the board's target, timed on its clock)."""
        from .timer import tvm_timer
        o = self.check_options(options)
        if o.tuning_asked or o.tune_rpc:
            raise AutonlError("timing does not tune: tune with autonl compile --backend tvm --tune-trials N, then "
                              "give its database with --tuning-dir")
        return tvm_timer(model, threads, o.target, o.tuning_dir, o.prepack, rpc, o.layout)
