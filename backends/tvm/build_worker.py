"""The worker processes of a MetaSchedule tuning run, and their shutdown (kept free of heavy
imports: the worker processes import this module).

Every process a tuning run starts is TVM's ``tvm.exec.popen_worker``: the builder's (one,
here) and the ``LocalRunner``'s (one). :func:`tuning_workers` starts both and shuts both
down when the tuning ends, on success, on error and on Ctrl-C. Each worker also asks the
kernel to kill it when the thread that started it goes away (Linux ``PR_SET_PDEATHSIG``),
so that not even a SIGKILLed tuning run leaves a worker behind that is busy building (an
idle worker already exits when its pipe to the parent closes)."""
from __future__ import annotations

from contextlib import contextmanager

from ..processes import die_with_parent


def _builder_worker_init() -> None:
    """Runs once in each build worker: the import MetaSchedule's default_build needs (its
    CPU part: :mod:`.intrinsics`)."""
    die_with_parent()
    from .intrinsics import register_cpu_intrinsics
    register_cpu_intrinsics()


def _builder_worker_ready() -> bool:
    return True


def export_shared_library(mod, cc: str | None = None) -> str:
    """A built candidate as a shared library (``cc``: the cross compiler that links it for a
    board), for a runner that loads it elsewhere: MetaSchedule's default export is a tar that
    the RPC server would have to link itself, with a compiler a board may not have."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="autonl-candidate-"), "candidate.so")
    mod.export_library(path, **({"cc": cc} if cc else {}))
    return path


def connect_direct(rpc_config):
    """A session with the RPC server at the config's address (MetaSchedule's runner asks a
    tracker for one; ``tracker_host``/``tracker_port`` carry the server's own address here)."""
    from tvm import rpc
    return rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                       session_timeout=rpc_config.session_timeout_sec)


def pooled_builder(workers: int, timeout_sec: float = 30.0, on_built=lambda n: None, export=None):
    """A MetaSchedule builder whose worker processes live as long as the tuning run.

    TVM's ``LocalBuilder`` starts fresh workers for every batch of candidates, and each one
    imports ``tvm.s_tir.tensor_intrin``, which parses TVMScript for every tensor intrinsic
    (CUDA's included): about 27 s a batch on this machine, against about 0.05 s to compile a
    candidate. Here the workers are started once (their initializer registers the CPU
    intrinsics only, :mod:`.intrinsics`, about 1.5 s) and reused for every batch. One
    worker is enough: a candidate builds in about 0.05 s while
    the evolutionary search takes about a second per task, and each extra worker pays the
    import again. A build that runs past ``timeout_sec`` (LLVM took over 9 minutes on one
    unrolled AutoNL-S candidate) is killed, reported to the tuner as a failed
    candidate, and its worker restarted. Workers are recycled after 1000 builds, as TVM
    recreates its pool against a memory leak. ``on_built(n)`` is told the size of each batch
    (the progress display). Call ``close()`` when tuning ends (:func:`tuning_workers` does);
    it kills the workers and may be called more than once.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_sec, initializer=_builder_worker_init,
                             maximum_process_uses=1000)
    # Start every worker now, in parallel (and alongside this process's own import of the
    # intrinsics when the tune contexts are made), not lazily one batch at a time.
    try:
        for _ in range(workers):
            pool.submit(_builder_worker_ready)
    except BaseException:
        shutdown_pool(pool)
        raise

    @derived_object
    class PooledBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            jobs = [(None, export, item.mod, item.target, _serialize_params(item.params)) for item in build_inputs]
            for res in pool.map_with_error_catching(lambda x: _worker_func(*x), jobs):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                elif res.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PooledBuilder: build timed out after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"PooledBuilder: {res.value}"))
            on_built(len(build_inputs))
            return results

        def close(self):
            shutdown_pool(pool)

    return PooledBuilder()


def shutdown_pool(pool) -> None:
    """Shut a ``PopenPoolExecutor`` down now: kill its worker processes (and theirs), let its
    threads see them gone, drop queued jobs, reap. Safe to call twice.

    TVM's own ``shutdown`` first closes its end of each worker's pipe, and a close waits for
    a thread that is reading it, so a worker still in its initializer (the builder's 27 s
    import) held Ctrl-C up for that long; the processes are killed first here."""
    if pool is None or getattr(pool, "_shutdown", False):
        return
    from tvm.support.popen_pool import kill_child_processes

    for worker in list(getattr(pool, "_worker_map", {}).values()):
        proc = getattr(worker, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                kill_child_processes(proc.pid)
                proc.kill()
            except Exception:  # noqa: BLE001  (already gone; psutil's or the OS's error)
                pass
    threads = getattr(pool, "_threadpool", None)
    if threads is not None:   # the threads read EOF and finish; queued jobs are dropped
        threads.shutdown(wait=True, cancel_futures=True)
    pool.shutdown(wait=True)


def local_runner(timeout_sec: float = 30.0, threads: int | None = None):
    """MetaSchedule's ``LocalRunner`` (one worker that times candidates on this CPU with
    ``threads`` TVM threads, default TVM's own count), its worker set to die with this
    process; shut it down with ``shutdown_pool(runner.pool)``."""
    from functools import partial

    from tvm.s_tir.meta_schedule.runner import local_runner as lr

    from .threads import runner_worker_init

    # LocalRunner starts its pool, then waits for a sanity check in it: a Ctrl-C (or an error)
    # there leaves a half-made runner whose pool only the garbage collector would shut down,
    # from whatever thread it runs in ("cannot join current thread"). The pool is recorded as
    # it is made, so that it is shut down here instead.
    made, base = [], lr.PopenPoolExecutor

    class RecordedPool(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    lr.PopenPoolExecutor = RecordedPool
    try:
        init = die_with_parent if threads is None else partial(runner_worker_init, threads)
        return lr.LocalRunner(timeout_sec=timeout_sec, initializer=init)
    except BaseException:
        for pool in made:
            shutdown_pool(pool)
        raise
    finally:
        lr.PopenPoolExecutor = base


def rpc_runner(addr: str, key: str | None, timeout_sec: float = 60.0):
    """MetaSchedule's ``RPCRunner``: each candidate uploaded to and timed on an RPC server,
    ``addr`` itself (``key`` None) or one that the tracker at ``addr`` hands out for ``key``;
    one session at a time (a plain server serves one)."""
    from functools import partial

    from tvm.s_tir.meta_schedule.runner import RPCConfig, RPCRunner

    host, _, port = addr.rpartition(":")
    config = RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key or "direct",
                       session_timeout_sec=int(timeout_sec))
    return RPCRunner(config, f_create_session=None if key else connect_direct, max_workers=1,
                     initializer=partial(die_with_parent))


# How long one candidate may take to build, or to run, before it counts as failed: a guard
# against a hung candidate, not a measurement. Generous: on a busy machine (a test suite beside
# other jobs) MetaSchedule's 30 s let every candidate of a task fail, leaving it no record.
CANDIDATE_TIMEOUT_S = 120.0


@contextmanager
def tuning_workers(workers: int = 1, timeout_sec: float = CANDIDATE_TIMEOUT_S, on_built=lambda n: None,
                   rpc: dict | None = None, threads: int | None = None):
    """(builder, runner) for ``ms.tune_tasks``: :func:`pooled_builder` and :func:`local_runner`
    (its candidates timed with ``threads`` TVM threads)
    (or, with ``rpc`` = {"addr", "key", "cc"}, a builder of shared libraries linked with ``cc``
    and :func:`rpc_runner`), both shut down, their worker processes killed and reaped, when
    the block ends, however it ends (TVM leaves the runner's worker to the garbage collector,
    which on an error keeps it as long as the traceback is kept)."""
    from functools import partial

    builder = runner = None
    try:
        if rpc is None:
            builder = pooled_builder(workers, timeout_sec, on_built)
            runner = local_runner(timeout_sec, threads)
        else:
            builder = pooled_builder(workers, timeout_sec, on_built, partial(export_shared_library, cc=rpc.get("cc")))
            runner = rpc_runner(rpc["addr"], rpc.get("key"))
        yield builder, runner
    finally:
        if runner is not None:
            shutdown_pool(runner.pool)
        if builder is not None:
            builder.close()
