"""MetaSchedule tuning, run in a process of its own (``python -m autonl.backends.tvm.tuning``).

Why a process: MetaSchedule's task scheduler is C++ that calls back into Python (the
builder, the runner, the cost model); a Ctrl-C lands in whichever callback runs, where TVM
turns the KeyboardInterrupt into an error that it sometimes logs and carries on from, so
that Ctrl-C was lost now and then and tuning went on to its end. Here :func:`tune` starts the
tuning process and waits; on Ctrl-C (or any error) it stops that process and with it every
worker process the tuning started (they die with their parent, ``build_worker``). The
database in ``work_dir`` keeps the records written so far: a second run tunes only the tasks
that have none.

The module and the target travel as TVM's JSON (``tvm.ir.save_json``) in a temporary file;
the result (or one error line) comes back as JSON in another; the progress bar is the
tuning process's own, on the terminal's stderr.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autonl.ir import AutonlError
from autonl.ir import atomic_write

from ..processes import stop_process_tree
from .build_worker import tuning_workers

STOP_GRACE_S = 5.0


def tune(mod, target, work_dir: str, trials_per_task: int, progress: bool = True) -> dict:
    """Tune the tasks of ``mod`` that have no record in ``work_dir``'s database yet, in a
    tuning process; returns the counts (tasks, tasks_with_records, tasks_tuned,
    trials_per_task, trials_run, seconds)."""
    import tvm

    os.makedirs(work_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tuning-", dir=work_dir) as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"mod": tvm.ir.save_json(mod), "target": tvm.ir.save_json(target),
                                   "work_dir": str(work_dir), "trials_per_task": int(trials_per_task),
                                   "progress": bool(progress)}))
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(job), str(result)], stdin=subprocess.DEVNULL)
        try:
            code = proc.wait()
        except BaseException:       # Ctrl-C, or anything else: the tuning process goes too
            stop_process_tree(proc, STOP_GRACE_S)   # with every worker the tuning started
            raise
        try:
            answer = json.loads(result.read_text())
        except (OSError, ValueError):
            raise AutonlError(f"the tuning process ended with exit code {code} and no result; "
                              f"the database in {work_dir} keeps the records written so far") from None
    if "error" in answer:
        raise AutonlError(answer["error"])
    return answer["info"]


def _records(work_dir: str) -> int:
    path = Path(work_dir) / "database_tuning_record.json"
    if not path.exists():
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def tune_here(mod, target, work_dir: str, trials_per_task: int, progress: bool = True) -> dict:
    """Tune, in this process, the tasks of ``mod`` that have no record in ``work_dir``'s database yet."""
    import logging

    from tqdm import tqdm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    os.makedirs(work_dir, exist_ok=True)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    db = ms.database.JSONDatabase(work_dir=work_dir)
    todo = [t for t in tasks if db.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    before = _records(work_dir)
    info = {"tasks": len(tasks), "tasks_with_records": len(tasks) - len(todo), "tasks_tuned": 0,
            "trials_per_task": trials_per_task, "trials_run": 0, "seconds": 0.0}
    if not todo or trials_per_task <= 0:
        return info
    # MetaSchedule's console handler takes the package logger's level: keep the terminal to
    # warnings and the progress bar; the full logs go to work_dir/logs.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    t0 = time.time()
    bar = tqdm(total=0, desc="tuning: starting build workers", unit="trial", disable=not progress,
               dynamic_ncols=True)
    try:
        with tuning_workers(1, on_built=lambda n: bar.update(min(n, bar.total - bar.n))) as (builder, runner):
            # A smaller evolutionary population than TVM's default (512 x 4 generations): with
            # budgets of tens of trials per task the search, not the measuring, dominated.
            strategy = ms.search_strategy.EvolutionarySearch(population_size=256, genetic_num_iters=3,
                                                             init_min_unmeasured=32)
            contexts, weights = extracted_tasks_to_tune_contexts(todo, work_dir, strategy=strategy, seed=0)
            total = trials_per_task * len(contexts)
            bar.total = total
            bar.set_description(f"tuning {len(contexts)} tasks")
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=total,
                          max_trials_per_task=trials_per_task, num_trials_per_iter=min(64, max(2, trials_per_task)),
                          database=db, builder=builder, runner=runner)
    finally:
        bar.close()
    info.update(tasks_tuned=len(contexts), trials_run=_records(work_dir) - before, seconds=time.time() - t0)
    return info


def main(argv: list[str]) -> int:
    """The tuning process: read the job, tune, write the result (or one error line)."""
    import tvm

    from .build_worker import die_with_parent

    die_with_parent()      # a SIGKILLed autonl takes its tuning process with it
    # Ctrl-C is the parent's to handle (it stops this process); here TVM would only turn it
    # into a logged error, or a traceback on the shared terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    try:
        info = tune_here(tvm.ir.load_json(job["mod"]), tvm.ir.load_json(job["target"]), job["work_dir"],
                         job["trials_per_task"], job["progress"])
        answer = {"info": info}
    except AutonlError as e:
        answer = {"error": str(e)}
    except Exception as e:  # noqa: BLE001  (TVM's errors: one line back to the parent)
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        answer = {"error": f"tuning failed: {type(e).__name__}: {last[:300]}"}
    atomic_write(result_path, json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
