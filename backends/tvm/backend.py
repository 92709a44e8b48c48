"""The ``tvm`` backend: a Relax/LLVM library (``model.so`` for the host, ``model.aarch64.so``
for boards) with its weights, optionally MetaSchedule-tuned; the runner is the Relax VM
(host libraries only: an aarch64 library runs on its board, ``autonl deploy``)."""
from __future__ import annotations

from pathlib import Path

from autonl.ir import AutonlError

from ..base import Backend, Option, register_backend


@register_backend
class TvmBackend(Backend):
    name = "tvm"
    doc = "TVM Relax library (.so) + params for a CPU target, optionally MetaSchedule-tuned"
    options = (
        Option("target", "host", "A named target (autonl targets)."),
        Option("tune_trials", 0, "MetaSchedule trials, on average per task; tasks get them in proportion to their "
               "share of the untuned time, each at least one batch (0: untuned, unless the tuning database has records).",
               int),
        Option("tune_minutes", None, "A tuning budget in minutes (with or without --tune-trials: tuning stops at "
               "whichever ends first).", float),
        Option("tune_rpc", None, "Tune on a board: HOST:PORT of its TVM RPC server (or of a tracker, with "
               "--tune-rpc-key); candidates are built for --target and timed there.", metavar="HOST:PORT"),
        Option("tune_rpc_key", None, "The tracker key of the board's servers (--tune-rpc is then a tracker)."),
        Option("resume", False, "Finish the tuning run that was interrupted in the tuning database (its plan, "
               "records and budget are kept as they are measured).", bool),
        Option("tuning_dir", None, "The tuning database (default OUT/tuning)."),
        Option("no_prepack", False, "No weight-layout prepacking after tuning (the network then stays NCHW).", bool),
        Option("layout", "nhwc", "The activations' layout in tuned builds: nhwc (convolutions vectorize over "
               "channels) or nchw (the ONNX model's own); a tuning database holds one layout's kernels.",
               ("nhwc", "nchw")),
    )

    def compile(self, model, out, options, log):
        from .compile import compile_tvm
        from .targets import get_target
        o = self.check_options(options)
        target = get_target(o["target"])
        if o["tune_trials"] < 0:
            raise AutonlError(f"--tune-trials must be >= 0 (got {o['tune_trials']})")
        if o["tune_minutes"] is not None and not o["tune_minutes"] > 0:
            raise AutonlError(f"--tune-minutes must be > 0 (got {o['tune_minutes']:g})")
        return compile_tvm(model, out, target, trials_per_task=o["tune_trials"], prepack=not o["no_prepack"],
                           tuning_dir=o["tuning_dir"], log=log, minutes=o["tune_minutes"], resume=o["resume"],
                           rpc=o["tune_rpc"], rpc_key=o["tune_rpc_key"], layout=o["layout"])

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
        if o["tune_trials"] or o["tune_minutes"] or o["resume"] or o["tune_rpc"]:
            raise AutonlError("timing does not tune: tune with autonl compile --backend tvm --tune-trials N, then "
                              "give its database with --tuning-dir")
        return tvm_timer(model, threads, o["target"], o["tuning_dir"], not o["no_prepack"], rpc, o["layout"])
