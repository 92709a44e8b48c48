"""CPU threads for training, search and evaluation on a machine that may be shared.

PyTorch's CPU build runs its intra-op work on OpenMP threads, one per core by default, that
spin between parallel regions (GNU OpenMP spins up to 300k pause instructions, milliseconds
on some CPUs, before it sleeps). On an idle machine that is the fastest way to run; beside
any other CPU-bound process it is a trap: a thread spins at each barrier for a sibling that
the scheduler has parked behind the other process. ``benchmarks/busy_machine.py`` measures
it (docs/benchmarks.md, "Threads on a shared machine"): beside one busy process a two-thread step took 3x its idle
time on this AMD EPYC machine and 24x on an Intel Xeon one, while a one-thread step took
the same as when idle. Sleeping threads (``OMP_WAIT_POLICY=PASSIVE``) help under load but
cost 15-60% on an idle machine, where every parallel region then pays a wake-up.

So the threads follow the free cores instead (:class:`FreeCores`): a training or search loop
starts with one thread per usable CPU (its share, under torchrun) and, every couple of
seconds, sets as many as the CPUs that other processes leave free (everything that is not
this process: other jobs, its own data-loading workers, other virtual machines' steal),
at least one. Idle, nothing changes; busy, the loop drops to the free cores within one
window and rises again when they are free. ``--threads`` or ``OMP_NUM_THREADS`` fix the
count (and its wait policy stays the user's).

Latency timing keeps its own rule (``autonl.backends.latency``): it times with the threads the
network is deployed with, whatever the load.

This module imports no torch.
"""
from __future__ import annotations

import os
import time
from typing import Callable

__all__ = ["FreeCores", "note_choice", "threads_line", "torch_threads", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, a container's cpuset included)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def torch_threads(asked: int | None, processes: int = 1) -> tuple[int, str]:
    """``(threads, why)``: torch's intra-op threads for one training process at its start.
    ``asked`` (``--threads``) wins, then ``OMP_NUM_THREADS``; otherwise the usable CPUs shared
    by the ``processes`` this machine runs (torchrun's), at least one (then :class:`FreeCores`
    follows the free ones)."""
    if asked is not None:
        return asked, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cpus = usable_cpus()
    share = max(1, cpus // max(1, processes))
    why = f"{cpus} usable CPU{'s' if cpus != 1 else ''}" + (f" / {processes} processes" if processes > 1 else "")
    return share, why + ", fewer while other processes keep cores busy"


_chosen: dict = {}


def note_choice(threads: int, why: str) -> None:
    """Remember how this process chose its threads (for :func:`threads_line` and whether
    :class:`FreeCores` may change them: only a count the user did not fix)."""
    _chosen.update(threads=threads, why=why, fitted=why not in ("--threads", "OMP_NUM_THREADS"))


def threads_line(threads: int) -> str:
    """The settings line's words on threads: how many, and why."""
    why = _chosen.get("why", "torch's default")
    return f"{threads} torch thread{'s' if threads != 1 else ''} ({why})"


_now = time.monotonic


def busy_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU-seconds busy on the whole machine, CPU-seconds of this process)."""
    import psutil
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)   # guest is in user already
    mine = psutil.Process().cpu_times()
    return _now(), total - idle, mine.user + mine.system


class FreeCores:
    """Torch's intra-op threads fitted, as a loop runs, to the CPUs other processes leave free.

    Call :meth:`tick` once a step; every ``every_s`` seconds it measures how many CPUs were
    busy with anything but this process over that window and sets
    ``set_threads(max(1, min(most, cpus - round(others))))``. Does nothing when the count was
    fixed by the user (see :func:`note_choice`) or ``most`` is 1."""

    def __init__(self, set_threads: Callable[[int], None], most: int, every_s: float = 2.0,
                 enabled: bool | None = None, cpus: int | None = None):
        self.set_threads, self.most, self.every_s = set_threads, most, every_s
        self.cpus = cpus or usable_cpus()
        self.enabled = (_chosen.get("fitted", True) if enabled is None else enabled) and most > 1
        self.threads, self.changes = most, 0
        self._last = busy_seconds() if self.enabled else None

    def others(self, now: tuple[float, float, float]) -> float:
        """CPUs kept busy by other processes since the last measurement."""
        wall = max(1e-6, now[0] - self._last[0])
        return max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall

    def tick(self) -> int:
        """Refit the threads if a window has passed; returns the count in force."""
        if not self.enabled or _now() - self._last[0] < self.every_s:
            return self.threads
        now = busy_seconds()
        # others' CPUs, rounded: half a core busy elsewhere takes one thread away
        fitted = max(1, min(self.most, self.cpus - int(self.others(now) + 0.5)))
        self._last = now
        if fitted != self.threads:
            self.set_threads(fitted)
            self.threads, self.changes = fitted, self.changes + 1
        return self.threads
