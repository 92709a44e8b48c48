"""Timing a model as the ``tvm`` backend compiles it (for latency tables and ``autonl bench``):
built in memory, run here through the Relax VM, or uploaded to an RPC server and run there.
Both use TVM's ``time_evaluator`` on a saved call of ``main``, so a run's time is the
kernels', on the clock of the machine that runs them."""
from __future__ import annotations

import tempfile
from pathlib import Path

from autonl.ir import AutonlError

from ..loading import deploy_model, reference_input
from ..manifest import cpu_name
from ..onnx.export import export_onnx
from .compile import build, layout_for, to_relax, vm_runner
from .targets import get_target, require_cc
from .threads import set_tvm_threads


_SESSIONS: dict[str, object] = {}


def rpc_session(addr: str):
    """One RPC session per server for this process: a plain ``tvm.exec.rpc_server`` serves one
    session at a time, so a second connection would wait for the first to close."""
    from .remote import connect
    if addr not in _SESSIONS:
        _SESSIONS[addr] = connect(addr)
    return _SESSIONS[addr]


def tvm_timer(model, threads: int, target_name: str, tuning_dir: str | None, prepack: bool, rpc: str | None,
              layout: str = "nhwc"):
    import tvm

    target = get_target(target_name)
    if not target.is_host and rpc is None:
        raise AutonlError(f"target '{target.name}' is not this machine: time it on the board through its RPC server "
                          f"(--rpc HOST:PORT), or use --target host")
    tvm_target = tvm.target.Target(target.target_dict())
    shape = list(model.graph.inputs[next(iter(model.graph.inputs))].shape)
    tuned = tuning_dir is not None and (Path(tuning_dir) / "database_tuning_record.json").exists()
    if tuning_dir is not None and not tuned:
        raise AutonlError(f"--tuning-dir {tuning_dir}: no tuning database there (database_tuning_record.json)")
    mod, params = to_relax(export_onnx(deploy_model(model)), shape, layout_for(layout, prepack, tuned))
    ex, main_params = build(mod, tvm_target, params, prepack and tuned, tuning_dir if tuned else None)
    x = reference_input(model.graph, batch=1)
    if rpc is None:
        set_tvm_threads(threads)
        runner = vm_runner(ex, main_params)      # the Relax VM as compile runs it, weights laid out once
        vm, dev, args = runner.vm, runner.dev, runner.args
        where, cpu = "host", cpu_name()
    else:
        from .remote import _remote_vm
        cc = require_cc(target)
        with tempfile.TemporaryDirectory(prefix="autonl-timer-") as tmp:
            lib = Path(tmp) / "block.so"
            ex.export_library(str(lib), **({"cc": cc} if cc else {}))
            data = lib.read_bytes()
        remote = rpc_session(rpc)
        vm, dev, args = _remote_vm(remote, Path(rpc), {"target": target.name, "entry": {}},
                                   (lib, data), main_params)
        where, cpu = f"rpc {rpc}", "the RPC server's"
    xt = tvm.runtime.tensor(x, dev)
    vm.save_function("main", "autonl_timed", xt, *args)

    def run(n: int) -> list[float]:
        timer = vm.time_evaluator("autonl_timed", dev, number=1, repeat=n, min_repeat_ms=0)
        return [t * 1e3 for t in timer().results]

    provenance = {"backend": "tvm", "runtime": "tvm", "runtime_version": tvm.__version__, "target": target.name,
                  "target_dict": target.target_dict(), "where": where, "cpu": cpu,
                  "threads": threads, "threads_set_by": "this process" if rpc is None else
                  "the RPC server (its TVM_NUM_THREADS)",
                  "compiled": ("tuned (" + str(tuning_dir) + ")") if tuned else "untuned",
                  "clock": "TVM time_evaluator, one call per run"}
    return run, provenance
