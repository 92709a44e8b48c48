"""TVM's worker threads. Left to itself, TVM's runtime on x86-64 takes half the CPUs it sees
(it assumes two hyper-threads a core): one thread on a 2-CPU machine, whatever the target's
``num-cores`` says. Every place that runs TVM kernels on this machine (the tuning runner, the
untuned timing of tasks, compile's latency check, the latency timer) sets the count
explicitly: ``TVM_NUM_THREADS`` when the user set it, else the target's ``num-cores``."""
from __future__ import annotations

import os


def set_tvm_threads(threads: int) -> None:
    """TVM's worker threads in this process (read when its thread pool starts, so before the
    first parallel kernel; set again for each timer, as a new pool size is taken on reset)."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import tvm
    try:
        tvm.get_global_func("runtime.config_threadpool")(0, threads)   # 0: big cores, as many as asked
    except Exception:  # noqa: BLE001  (an older runtime without it reads the variable instead)
        pass


def target_threads(target) -> int:
    """The threads kernels for ``target`` (a tvm Target) run with here: ``TVM_NUM_THREADS``
    if set, else the target's ``num-cores``, else this machine's CPUs."""
    env = os.environ.get("TVM_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = int(target.attrs["num-cores"])
    except (KeyError, TypeError, ValueError):
        cores = 0
    return cores if cores > 0 else (os.cpu_count() or 1)


def runner_worker_init(threads: int) -> None:
    """Runs once in the tuning runner's worker: die with the tuning process, time candidates
    with ``threads`` threads, as the deployed network runs them."""
    from ..processes import die_with_parent

    die_with_parent()
    set_tvm_threads(threads)
