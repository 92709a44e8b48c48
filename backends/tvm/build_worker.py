"""A MetaSchedule builder for small machines (kept free of heavy imports: its worker
processes import this module)."""
from __future__ import annotations


def _builder_worker_init() -> None:
    """Runs once in each build worker: the import MetaSchedule's default_build needs."""
    import tvm.s_tir.tensor_intrin  # noqa: F401


def _builder_worker_ready() -> bool:
    return True


def pooled_builder(workers: int, timeout_sec: float = 30.0, on_built=lambda n: None):
    """A MetaSchedule builder whose worker processes live as long as the tuning run.

    TVM's ``LocalBuilder`` starts fresh workers for every batch of candidates, and each one
    imports ``tvm.s_tir.tensor_intrin``, which parses TVMScript for every tensor intrinsic
    (CUDA's included): about 27 s a batch on this machine, against about 0.05 s to compile a
    candidate. Here the workers are started once (the import runs in their initializer) and
    reused for every batch. One worker is enough: a candidate builds in about 0.05 s while
    the evolutionary search takes about a second per task, and each extra worker pays the
    import again. A build that runs past ``timeout_sec`` (LLVM took over 9 minutes on one
    unrolled AutoNL-S candidate) is killed, reported to the tuner as a failed
    candidate, and its worker restarted. Workers are recycled after 1000 builds, as TVM
    recreates its pool against a memory leak. ``on_built(n)`` is told the size of each batch
    (the progress display). Call ``close()`` when tuning ends.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_sec, initializer=_builder_worker_init,
                             maximum_process_uses=1000)
    # Start every worker now, in parallel (and alongside this process's own import of the
    # intrinsics when the tune contexts are made), not lazily one batch at a time.
    for _ in range(workers):
        pool.submit(_builder_worker_ready)

    @derived_object
    class PooledBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            jobs = [(None, None, item.mod, item.target, _serialize_params(item.params)) for item in build_inputs]
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
            pool.shutdown()

    return PooledBuilder()
