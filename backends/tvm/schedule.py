"""How a tuning budget is spent: trials follow the time, records are kept as they are measured.

MetaSchedule's own schedulers give every task the same trials (``max_trials_per_task``),
however little of the network's time the task takes, and they commit a task's measured
records only when they next pick that task: in the first round over 126 tasks nothing is
committed until every task has had its turn, so a tuning run stopped there left nothing.

:class:`Plan` (``tuning_plan.json`` in the database's folder) holds, per task still to tune,
its share of the network's time (the untuned kernel's time times its calls, measured before
tuning; a FLOP estimate where the kernels cannot be timed here), its trial allocation and the
trials done so far; it is rewritten after every measured batch, so an interrupted run (Ctrl-C,
SIGKILL, a power cut) can be resumed (``--resume``) with the records and the budget it had.

Allocation (:func:`allocate`): every task gets one batch of trials (a data-movement kernel
with a small share gets no more), the rest of the budget goes in proportion to the shares,
no task above :data:`MAX_TRIALS_PER_TASK` (what it would not use is shared out again). The
shares follow the time as tuning goes (:meth:`Plan.shares_now`): the untuned times only
order the first round; from then on a task's share is its best measured time times its
calls. (Untuned shares alone mislead: on AutoNL-S at 224 the 1x1 convolutions took 70% of
the untuned time and became 20-40x faster in their first batches, while the 112x112
depthwise convolutions, a few percent untuned, stayed at 2 ms each and became the largest
tuned kernels.)
:func:`time_scheduler` picks, each time, the task furthest behind its allocation (every task
gets its first batch before any gets a second, largest share first), joins the batch it sent
right away so that its records reach the database at once, and stops at the deadline of a
``--tune-minutes`` budget. Without a trial count the allocation follows an estimate of the
trials the remaining minutes allow, updated from the measured trial rate.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from autonl.ir import AutonlError
from autonl.ir import atomic_write

PLAN_FILE = "tuning_plan.json"
MAX_TRIALS_PER_TASK = 512
BATCH = 16


def allocate(shares: list[float], total: int, batch: int, cap: int = MAX_TRIALS_PER_TASK) -> list[int]:
    """Trials per task: ``batch`` each, the rest of ``total`` in proportion to ``shares`` (in
    whole batches), none above ``cap``, what a capped task leaves shared among the others."""
    n = len(shares)
    if n == 0:
        return []
    alloc = [batch] * n
    rest = max(0, total - batch * n)
    open_ = [i for i in range(n)]
    while rest >= batch and open_:
        weight = sum(max(shares[i], 0.0) for i in open_) or float(len(open_))
        given = 0
        for i in open_:
            s = max(shares[i], 0.0) if weight else 1.0
            extra = batch * math.floor(rest * s / weight / batch)
            extra = min(extra, cap - alloc[i])
            alloc[i] += extra
            given += extra
        still = [i for i in open_ if alloc[i] < cap]
        if given == 0:     # what is left is less than a batch per task: largest shares first
            for i in sorted(still, key=lambda i: -shares[i]):
                if rest - given < batch:
                    break
                alloc[i] += batch
                given += batch
            break
        rest -= given
        open_ = still
    return alloc


@dataclass
class TaskPlan:
    key: str            # task name + structural hash of its PrimFunc
    name: str
    calls: int
    cost_us: float      # untuned kernel time (or FLOP estimate) x calls
    share: float = 0.0
    alloc: int = 0
    done: int = 0
    best_us: float | None = None     # the fastest candidate measured so far
    closed: bool = False    # MetaSchedule ended it early: its search space had no more candidates
    failed: int = 0         # trials that did not build or run (an error, or past the workers' timeout)
    error: str | None = None    # the first such trial's error, cut to a line


@dataclass
class Plan:
    """A tuning run's allocation and progress (``tuning_plan.json``)."""
    tasks: list[TaskPlan]
    trials_per_task: int
    minutes: float | None
    batch: int
    cost: str                       # "untuned time" or "FLOPs"
    seconds: float = 0.0            # tuning time spent so far, over all sessions
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def total(self) -> int:
        return self.trials_per_task * len(self.tasks)

    @property
    def finished(self) -> bool:
        out_of_time = self.minutes is not None and self.seconds >= self.minutes * 60
        return out_of_time or all(t.done >= t.alloc or t.closed for t in self.tasks)

    def trials_done(self) -> int:
        return sum(t.done for t in self.tasks)

    def shares_now(self) -> list[float]:
        """Each task's share of the time as it stands: once every open task has a measured
        candidate, its best time times its calls (a kernel tuning has already made fast needs
        fewer trials than one that stays slow); before that, the shares the plan began with."""
        open_ = [t for t in self.tasks if not t.closed]
        if not open_ or any(t.best_us is None for t in open_):
            return [t.share for t in self.tasks]
        cost = [0.0 if t.closed else t.best_us * t.calls for t in self.tasks]
        whole = sum(cost) or 1.0
        return [c / whole for c in cost]

    def reallocate(self, total: int) -> None:
        """Allocations for a budget of ``total`` trials by the shares as they stand (never
        below what a task has already had)."""
        for t, a in zip(self.tasks, allocate(self.shares_now(), total, self.batch)):
            t.alloc = max(a, t.done)

    def to_json(self) -> dict:
        return {"format": "autonl-tuning-plan", "version": 1, "trials_per_task": self.trials_per_task,
                "minutes": self.minutes, "batch": self.batch, "cost": self.cost, "seconds": self.seconds,
                "started": self.started, "trials_done": self.trials_done(),
                "tasks": [vars(t) for t in self.tasks]}

    def save(self, work_dir: str | Path) -> None:
        atomic_write(Path(work_dir) / PLAN_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(work_dir: str | Path) -> "Plan | None":
        path = Path(work_dir) / PLAN_FILE
        if not path.exists():
            return None
        from autonl.ir.json_file import read_json_file
        d = read_json_file(path, "tuning plan", hint="; remove it to tune afresh")
        try:
            return Plan([TaskPlan(**t) for t in d["tasks"]], int(d["trials_per_task"]), d["minutes"],
                        int(d["batch"]), str(d["cost"]), float(d["seconds"]), str(d["started"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AutonlError(f"{path}: not a tuning plan ({type(e).__name__}: {e}); remove it to tune afresh") \
                from None


def new_plan(tasks: list[TaskPlan], trials_per_task: int, minutes: float | None, cost: str) -> Plan:
    whole = sum(t.cost_us for t in tasks) or 1.0
    for t in tasks:
        t.share = t.cost_us / whole
    batch = BATCH if trials_per_task <= 0 else max(1, min(BATCH, trials_per_task))
    plan = Plan(tasks, trials_per_task, minutes, batch, cost)
    if trials_per_task > 0:
        plan.reallocate(plan.total)
    else:   # minutes only: no task limit but the cap; the order follows an estimated total
        for t in plan.tasks:
            t.alloc = MAX_TRIALS_PER_TASK
    return plan


def time_scheduler(plan: Plan, work_dir: str, start: float, on_batch=lambda n: None):
    """A MetaSchedule task scheduler (``task_scheduler=`` of ``ms.tune_tasks``) for the
    plan's tasks, in the plan's order; ``start``: when this session's tuning began (the
    plan's ``seconds`` count from there)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    spent_before, done_at_start = plan.seconds, plan.trials_done()
    deadline = None if plan.minutes is None else start + plan.minutes * 60 - spent_before

    @derived_object
    class TimeScheduler(PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.running: int | None = None

        def _join(self) -> None:
            i, self.running = self.running, None
            if i is None:
                return
            if self._outer().tasks_[i].is_terminated:    # no candidate left in its space: nothing sent
                plan.tasks[i].closed = True
                n = 0
            else:
                results = _ffi_api.TaskSchedulerJoinRunningTask(self._outer(), i)   # records reach the database
                n = len(results)
                t = plan.tasks[i]
                t.done += n
                times = [sorted(float(x) for x in r.run_secs)[len(r.run_secs) // 2] * 1e6
                         for r in results if r.error_msg is None and r.run_secs]
                t.failed += n - len(times)
                if t.error is None and n > len(times):
                    msg = next((str(r.error_msg) for r in results if r.error_msg is not None), "no run time")
                    t.error = " ".join(msg.split())[:300]
                if times:
                    t.best_us = min(times + ([t.best_us] if t.best_us is not None else []))
                if plan.trials_per_task > 0:
                    plan.reallocate(plan.total)
            plan.seconds = spent_before + time.time() - start
            plan.save(work_dir)
            on_batch(n)

        def _targets(self) -> list[float]:
            if plan.trials_per_task > 0:
                return [t.alloc for t in plan.tasks]
            done = plan.trials_done()
            shares = plan.shares_now()
            if done == done_at_start or deadline is None:
                return shares
            rate = (time.time() - start) / max(1, done - done_at_start)
            total = done + max(0.0, deadline - time.time()) / max(rate, 1e-3)
            return allocate(shares, int(total), plan.batch)

        def next_task_id(self) -> int:
            self._join()
            if deadline is not None and time.time() >= deadline:
                return -1
            tasks = self._outer().tasks_
            targets = self._targets()
            best, best_key = -1, None
            for i, t in enumerate(plan.tasks):
                if tasks[i].is_terminated or t.closed or t.done >= t.alloc:
                    continue
                key = (t.done / max(targets[i], 1e-12), -t.share)   # first batches: largest share first
                if best_key is None or key < best_key:
                    best, best_key = i, key
            self.running = best if best >= 0 else None
            return best

    return TimeScheduler()
