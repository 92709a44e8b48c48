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

import numpy as np

from autonl.ir import AutonlError
from autonl.ir import atomic_write

from ..processes import python_module, stop_process_tree
from .build_worker import tuning_workers
from .intrinsics import register_cpu_intrinsics
from .threads import set_tvm_threads, target_threads

STOP_GRACE_S = 5.0


def tune(mod, target, work_dir: str, trials_per_task: int, progress: bool = True, minutes: float | None = None,
         resume: bool = False, rpc: dict | None = None, seed: int = 0) -> dict:
    """Tune ``mod`` (an IRModule, or a list of them whose tasks are pooled) into ``work_dir``'s
    database, in a tuning process (:func:`tune_here`); returns its counts. ``seed``: the
    search's random seed (the same seed, tasks and measurements give the same candidates). ``rpc``
    ({"addr": HOST:PORT, "key": tracker key or None, "cc": cross compiler or None}): the
    candidates are linked with ``cc`` and timed on that RPC server (or one the tracker gives)."""
    import tvm

    mods = list(mod) if isinstance(mod, (list, tuple)) else [mod]
    if trials_per_task <= 0 and not minutes and not resume:     # nothing to tune: count what is covered
        return tune_here(mods, target, work_dir, 0, progress)
    if resume:
        require_plan(work_dir)      # before anything is written
    os.makedirs(work_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tuning-", dir=work_dir) as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"mods": [tvm.ir.save_json(m) for m in mods], "target": tvm.ir.save_json(target),
                                   "work_dir": str(work_dir), "trials_per_task": int(trials_per_task),
                                   "minutes": minutes, "resume": bool(resume), "progress": bool(progress),
                                   "rpc": rpc, "seed": int(seed)}))
        proc = subprocess.Popen(python_module(__name__, str(job), str(result)), stdin=subprocess.DEVNULL)
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


def task_key(task) -> str:
    """A task's identity across processes: its name and the structural hash of its PrimFunc."""
    from tvm_ffi import structural_hash
    return f"{task.task_name}:{structural_hash(task.dispatched[0]) & 0xFFFFFFFFFFFFFFFF:016x}"


def time_prim(mod, target, dev, repeat: int = 5) -> float:
    """Median microseconds of one call of the PrimFunc in ``mod`` on random arguments."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    infos = ArgInfo.from_entry_func(mod, remove_preproc=True)
    # As MetaSchedule's default_build builds a candidate (weight layout rewrites are left to
    # prepacking), without its import of tvm.s_tir.tensor_intrin (about 27 s).
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with target:
        lib = tvm.tirx.build(mod, target=target)
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in info.shape]).astype(str(info.dtype))
                               if "float" in str(info.dtype) else
                               np.zeros([int(d) for d in info.shape], dtype=str(info.dtype)), dev)
            for info in infos]
    timer = lib.time_evaluator(lib.entry_name, dev, number=3,
                               repeat=repeat, min_repeat_ms=5)
    return float(np.median(np.array(timer(*args).results))) * 1e6


def task_costs(tasks, target, local: bool, progress: bool) -> tuple[list[float], str]:
    """Each task's share of the network's time before tuning: its untuned kernel timed here
    times its calls, or (``local`` false: the kernels run elsewhere) its FLOPs times its calls."""
    import tvm
    from tqdm import tqdm
    from tvm.s_tir.analysis import estimate_tir_flops

    if not local:
        return [max(1.0, float(estimate_tir_flops(t.dispatched[0]))) * int(t.weight) for t in tasks], "FLOPs"
    dev = tvm.cpu()
    costs = []
    for t in tqdm(tasks, desc="timing the untuned kernels", unit="task", disable=not progress, dynamic_ncols=True):
        costs.append(time_prim(t.dispatched[0], target, dev, repeat=3) * int(t.weight))
    return costs, "untuned time"


def extract(mods: list, target) -> list:
    """The MetaSchedule tasks of ``mods``, one per distinct workload (its calls summed)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    pooled: dict[int, object] = {}
    for mod in mods:
        for t in ms.relax_integration.extract_tasks(mod, target):
            h = structural_hash(t.dispatched[0])
            if h in pooled:
                old = pooled[h]
                pooled[h] = ms.ExtractedTask(old.task_name, old.mod, old.target, old.dispatched,
                                             int(old.weight) + int(t.weight))
            else:
                pooled[h] = t
    return list(pooled.values())


def search_strategy(trials_per_task: int | None):
    """MetaSchedule's evolutionary search, sized to the budget. TVM's default (a population of
    512, 4 generations) spends seconds per batch evolving candidates against a cost model;
    with budgets of tens of trials per task that search, not the measuring, dominated, so a
    population of 256 and 3 generations. With a handful of trials per task the cost model has
    next to nothing to rank by, and even that was most of the time (35 tasks at 1 trial: 90 s
    at 256/3, 29 s at 32/1 on this 2-core machine): the population follows the budget, 8
    candidates per trial between 32 and 256, one generation below 16 trials. ``None``: a
    budget in minutes only, the full size."""
    from tvm.s_tir import meta_schedule as ms

    population = 256 if trials_per_task is None else min(256, max(32, 8 * trials_per_task))
    generations = 3 if trials_per_task is None or trials_per_task >= 16 else 1
    return ms.search_strategy.EvolutionarySearch(population_size=population, genetic_num_iters=generations,
                                                 init_min_unmeasured=min(32, max(8, population // 8)))


def require_plan(work_dir: str):
    """The plan an interrupted run left in ``work_dir``, or one line."""
    from .schedule import PLAN_FILE, Plan

    plan = Plan.load(work_dir) if Path(work_dir).is_dir() else None
    if plan is None:
        raise AutonlError(f"nothing to resume: {work_dir} holds no tuning plan ({PLAN_FILE}); tune without --resume")
    return plan


def tune_here(mods: list, target, work_dir: str, trials_per_task: int, progress: bool = True,
              minutes: float | None = None, resume: bool = False, rpc: dict | None = None, seed: int = 0) -> dict:
    """Tune, in this process, the tasks of ``mods`` that have no record in ``work_dir``'s
    database yet, on a budget of ``trials_per_task`` trials per task on average and/or
    ``minutes``, spent as :mod:`.schedule` plans; with ``resume``, finish the plan an
    interrupted run left in ``work_dir`` instead."""
    from tvm.s_tir import meta_schedule as ms

    from .schedule import PLAN_FILE

    os.makedirs(work_dir, exist_ok=True)
    t0 = time.time()
    threads = None
    if rpc is None:      # kernels timed here run as the deployed network runs them (threads.py)
        threads = target_threads(target)
        set_tvm_threads(threads)
    tasks = extract(mods, target)
    db = ms.database.JSONDatabase(work_dir=work_dir)
    with_records = [db.query_tuning_record(t.dispatched[0], target, t.task_name) is not None for t in tasks]
    info = {"tasks": len(tasks), "tasks_with_records": sum(with_records), "tasks_covered": sum(with_records),
            "tasks_tuned": 0,
            "trials_per_task": trials_per_task, "minutes": minutes, "trials_run": 0, "seconds": 0.0,
            "resumed": bool(resume), "plan": None,
            "measured_on": f"this machine, {threads} threads" if rpc is None else f"RPC {'tracker' if rpc.get('key') else 'server'} "
                                                                  f"{rpc['addr']}" + (f" key {rpc['key']}" if rpc.get("key") else "")}
    planned = _plan(tasks, with_records, target, work_dir, trials_per_task, minutes, resume, rpc, progress, info)
    if planned is None:
        return info
    plan, todo = planned
    info["plan"] = str(Path(work_dir) / PLAN_FILE)
    if plan.finished:
        return info
    before = _records(work_dir)
    t1 = time.time() if resume else t0      # a new plan's budget counts the untuned timing too
    _run_plan(plan, todo, target, work_dir, db, t1, rpc, threads, seed, progress)
    db = ms.database.JSONDatabase(work_dir=work_dir)
    info.update(tasks_covered=sum(db.query_tuning_record(t.dispatched[0], target, t.task_name) is not None
                                  for t in tasks),
                tasks_tuned=sum(1 for t in plan.tasks if t.done > 0), trials_run=_records(work_dir) - before,
                trials_failed=sum(t.failed for t in plan.tasks),
                failures=[f"{t.name}: {t.error}" for t in plan.tasks if t.error][:3],
                seconds=time.time() - t1, trials_planned=sum(t.alloc for t in plan.tasks) if plan.trials_per_task
                else None, trials_done=plan.trials_done(), plan_seconds=plan.seconds)
    return info


def _plan(tasks: list, with_records: list[bool], target, work_dir: str, trials_per_task: int,
          minutes: float | None, resume: bool, rpc: dict | None, progress: bool, info: dict):
    """(plan, tasks to tune): the interrupted run's plan (``resume``), or a new one for the
    tasks without a record, saved in ``work_dir``; None: nothing to tune. Notes an unfinished
    plan that a new one replaces in ``info``."""
    from .schedule import Plan, TaskPlan, new_plan

    keys = [task_key(t) for t in tasks]
    old = Plan.load(work_dir)
    if resume:
        old = require_plan(work_dir)
        by_key = dict(zip(keys, tasks))
        missing = [t.name for t in old.tasks if t.key not in by_key]
        if missing:
            raise AutonlError(f"the tuning plan in {work_dir} is for another network ({len(missing)} of its "
                              f"tasks, e.g. {missing[0]}, are not in this one); tune without --resume")
        return old, [by_key[t.key] for t in old.tasks]
    if old is not None and not old.finished:
        info["unfinished"] = f"{old.trials_done()} trials of a plan of {sum(t.alloc for t in old.tasks)}"
    todo = [t for t, has in zip(tasks, with_records) if not has]
    if not todo or (trials_per_task <= 0 and not minutes):
        return None
    costs, kind = task_costs(todo, target, rpc is None, progress)
    plan = new_plan([TaskPlan(task_key(t), t.task_name, int(t.weight), c) for t, c in zip(todo, costs)],
                    trials_per_task, minutes, kind)
    plan.save(work_dir)
    return plan, todo


def _run_plan(plan, todo: list, target, work_dir: str, db, t1: float, rpc: dict | None, threads: int | None,
              seed: int, progress: bool) -> None:
    """Spend ``plan`` on the tasks ``todo`` with MetaSchedule (its budget counted from ``t1``),
    the records going into ``db``; a progress bar counts the trials."""
    import logging

    from tqdm import tqdm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    from .schedule import time_scheduler

    # MetaSchedule's console handler takes the package logger's level: keep the terminal to
    # warnings and the progress bar; the full logs go to work_dir/logs.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    done0 = plan.trials_done()
    if plan.trials_per_task > 0:
        bar = tqdm(total=sum(t.alloc for t in plan.tasks), initial=done0, unit="trial", disable=not progress,
                   dynamic_ncols=True, desc=f"tuning {len(todo)} tasks")
    else:
        bar = tqdm(total=None, initial=done0, unit="trial", disable=not progress, dynamic_ncols=True,
                   desc=f"tuning {len(todo)} tasks for {plan.minutes:g} min")
    try:
        with tuning_workers(1, rpc=rpc, threads=threads) as (builder, runner):
            strategy = search_strategy(max(t.alloc for t in plan.tasks) if plan.trials_per_task > 0 else None)
            register_cpu_intrinsics()      # before TuneContext imports every intrinsic TVM has (.intrinsics)
            contexts, weights = extracted_tasks_to_tune_contexts(todo, work_dir, strategy=strategy, seed=seed)
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir,
                          max_trials_global=10 ** 9, max_trials_per_task=max(t.alloc for t in plan.tasks),
                          num_trials_per_iter=plan.batch, database=db, builder=builder, runner=runner,
                          task_scheduler=time_scheduler(plan, work_dir, t1, on_batch=bar.update))
    finally:
        bar.close()


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
        info = tune_here([tvm.ir.load_json(m) for m in job["mods"]], tvm.ir.load_json(job["target"]), job["work_dir"],
                         job["trials_per_task"], job["progress"], job["minutes"], job["resume"], job["rpc"],
                         job.get("seed", 0))
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
