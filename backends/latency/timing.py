"""One latency measurement, the same for a block of a table, a whole network (``autonl
bench``) and the check (:func:`measure_all`).

A machine's speed is not constant: on a shared machine (a virtual machine whose host gives
its second core to someone else for minutes at a time, another job, a phone that heats up)
the same 2-thread network measured here ran 1.0x to 1.8x its best time from one minute to
the next, while the *ratios* between networks timed together held (rank correlation 0.97
to 0.99 within each run). So a measurement times its models in interleaved rounds (round 1
over all of them, then round 2, ...), each model's raw latency is its **lowest round
median** (a round disturbed by another job is slower, never faster), confirmed: a model whose
lowest round median has no other round within 3% of it gets more rounds, later, up to three
times as many in all (on a busy host, where one table's probe rounds ran up to 4.3x its best,
a lowest median no other round agrees with says that most rounds were disturbed, and the
model's floor is still to be found), and a fixed **probe**
network (a fixed sub-network of the table's space) is timed between the rounds: the run's
latencies are scaled by ``probe_ref / probe_best``, where ``probe_best`` is the probe's
lowest round median in this run and ``probe_ref`` the same figure in the latency table the
measurement is compared with (without a table: no probe, no scaling). Table, check and
bench then speak of the same machine speed; raw figures are kept beside the scaled ones.
Tried and dropped: a small 64x64 probe (it sped up and slowed down differently from 224x224
networks and left the check's networks 10% off the table's level), and scaling each round
by the probe next to it (it corrected the level as well but added round-to-round noise,
rank correlation 0.937 against 0.949).

A backend supplies the timed calls (:meth:`Backend.latency_timer`): wall time around a
session run for onnxruntime, TVM's ``time_evaluator`` (here or on an RPC server's clock).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Hashable

import numpy as np

# ``timer(n)`` runs the compiled model ``n`` times and returns each run's milliseconds
Timer = Callable[[int], list[float]]


@dataclass(frozen=True)
class ModelLatency:
    """One model's latency from :func:`measure_all`: its lowest round median and spread."""

    ms: float            # the latency: the lowest round median, scaled to the reference probe
    p10_ms: float        # spread: 10th and 90th percentiles of every run, scaled alike
    p90_ms: float
    runs: int
    raw_ms: float        # the lowest round median as measured
    raw_p10_ms: float    # 10th and 90th percentiles of every run as measured
    raw_p90_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Effort:
    """How long to measure: ``warmup`` untimed calls, then ``rounds`` rounds of at least
    ``round_runs`` timed calls and ``round_seconds`` each (at most ``max_round_runs``); the
    probe is timed again whenever ``probe_every`` seconds have passed. A model's lowest round
    median counts once another of its rounds lies within ``confirm`` of it; models without
    that get more rounds, later (a disturbance passes), up to ``extra`` times ``rounds`` more."""

    warmup: int = 10
    rounds: int = 9
    round_runs: int = 5
    round_seconds: float = 0.05
    max_round_runs: int = 500
    probe_every: float = 0.3
    confirm: float = 0.03
    extra: int = 2

    def as_dict(self) -> dict:
        return asdict(self)


def _round(timer: Timer, effort: Effort) -> list[float]:
    times: list[float] = []
    t0 = time.perf_counter()
    batch = effort.round_runs
    while True:
        times += timer(batch)
        spent = time.perf_counter() - t0
        if len(times) >= effort.max_round_runs or spent >= effort.round_seconds:
            return times
        per = spent / len(times)
        batch = int(min(effort.max_round_runs - len(times), max(1, (effort.round_seconds - spent) / max(per, 1e-6)) + 1))


@dataclass(frozen=True)
class Measured:
    timings: dict            # key -> ModelLatency
    probe_ms: float          # the probe's best round median in this run
    probe_ref_ms: float      # what the rounds were scaled to (probe_ms, or the table's)
    probe_rounds: int
    probe_range: tuple[float, float]   # the probe's slowest round over its best (how much the speed moved)
    others_cpus: float = 0.0  # CPUs that other processes kept busy, on average, while this timed
    cpus: int = 1             # this machine's usable CPUs

    def busy_warning(self, threads: int) -> str | None:
        """One ``warning:`` line when other processes kept at least half a CPU busy while
        this process timed models with ``threads`` threads on this machine, and the timing's
        threads and theirs did not fit in its CPUs with half a CPU to spare (timing on a
        remote device is not slowed by this machine's load: do not ask), else None. The
        figures are then likely slower than on an idle machine (``docs/training.md``, "Threads on a
        shared machine": two threads beside one busy process ran up to 3x their idle time)."""
        return busy_warning(self.others_cpus, self.cpus, threads)


def busy_warning(others: float, cpus: int, threads: int) -> str | None:
    """See :meth:`Measured.busy_warning`."""
    if others < 0.5 or threads + others <= cpus - 0.5:    # idle, or load on cores the timing did not need
        return None
    shared = " (its threads shared cores with them)" if threads + others > cpus + 0.25 else ""
    return (f"warning: other processes kept {others:.1f} of this machine's {cpus} CPUs busy while timing "
            f"with {threads} thread{'s' if threads != 1 else ''}{shared}; these latencies are likely slower "
            "than on an idle machine: time again when it is idle")


def measure_all(timers: dict[Hashable, Timer], effort: Effort = Effort(), probe: Timer | None = None,
                probe_ref_ms: float | None = None, progress: Callable[[int, int], None] | None = None) -> Measured:
    """Time every timer in ``rounds`` interleaved rounds (round 1 over all of them, then round 2,
    ...), with ``probe`` timed between them; see the module docstring. Without a probe, each
    round counts as it was measured (scale 1)."""
    from ..cpu import busy_seconds, usable_cpus
    start = busy_seconds()
    for timer in timers.values():
        timer(effort.warmup)
    probes: list[tuple[float, float]] = []       # (time, probe round median)

    def time_probe() -> None:
        probes.append((time.perf_counter(), float(np.median(_round(probe, effort)))))

    if probe is not None:
        probe(effort.warmup)
        time_probe()
    rounds: dict[Hashable, list[float]] = {k: [] for k in timers}       # each round's median
    every: dict[Hashable, list[float]] = {k: [] for k in timers}
    done, total = 0, effort.rounds * len(timers)
    todo = list(timers)
    for r in range(effort.rounds * (1 + effort.extra)):
        if r >= effort.rounds:      # the extra rounds: only models whose lowest median stands alone
            todo = [k for k in todo if not confirmed(rounds[k], effort.confirm)]
            if not todo:
                break
            total += len(todo)
        for key in todo:
            # a few models (autonl bench): the probe between every round, so that its best is
            # taken over as many rounds as theirs
            if probe is not None and (len(timers) <= 3 or time.perf_counter() - probes[-1][0] > effort.probe_every):
                time_probe()
            times = _round(timers[key], effort)
            rounds[key].append(float(np.median(times)))
            every[key] += times
            done += 1
            if progress is not None:
                progress(done, total)
    if probe is not None:
        time_probe()
    best = min(p for _, p in probes) if probes else 1.0
    ref = probe_ref_ms if probe_ref_ms is not None else best
    scale = ref / best if probe is not None else 1.0
    out = {}
    for key in timers:
        low = min(rounds[key])
        raw = np.asarray(every[key])
        p10, p90 = float(np.percentile(raw, 10)), float(np.percentile(raw, 90))
        out[key] = ModelLatency(low * scale, p10 * scale, p90 * scale, len(raw), low, p10, p90)
    end = busy_seconds()
    # other processes' CPU-seconds over the timing's wall time (this process's own, its
    # onnxruntime or TVM threads included, subtracted)
    others = max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / max(1e-6, end[0] - start[0])
    return Measured(out, best, ref, len(probes), (best, max(p for _, p in probes) if probes else 1.0),
                    round(others, 2), usable_cpus())


def confirmed(medians: list[float], within: float) -> bool:
    """Whether the lowest of ``medians`` has another within ``within`` (relative) of it: a
    latency that two rounds agree on, not one round that a disturbance spared alone."""
    if len(medians) < 2:
        return False
    low, second = sorted(medians)[:2]
    return second <= low * (1 + within)


def interleaved_rounds(fns: dict[Hashable, Callable[[], object]], rounds: int, calls: int,
                       warmup: int = 3) -> dict[Hashable, list[list[float]]]:
    """Each call of ``fns`` timed (:func:`wall_timer`) in ``rounds`` interleaved rounds (round 1
    over all of them, then round 2, ...) of ``calls`` calls each, after ``warmup`` untimed calls
    of each; returns each one's milliseconds, round by round. The plain measurement of the
    benchmarks and of a compile's latency line; :func:`measure_all` is the careful one."""
    timers = {k: wall_timer(fn) for k, fn in fns.items()}
    for timer in timers.values():
        timer(warmup)
    out: dict[Hashable, list[list[float]]] = {k: [] for k in timers}
    for _ in range(rounds):
        for k, timer in timers.items():
            out[k].append(timer(calls))
    return out


def median_of_calls(fns: dict[Hashable, Callable[[], object]], rounds: int, calls: int,
                    warmup: int = 3) -> dict[Hashable, float]:
    """The median milliseconds over every timed call of :func:`interleaved_rounds`, for each of ``fns``."""
    return {k: float(np.median([t for r in rs for t in r]))
            for k, rs in interleaved_rounds(fns, rounds, calls, warmup).items()}


def median_ms(fn: Callable[[np.ndarray], object], x: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn(x)`` in milliseconds over ``runs`` calls, after ``warmup``
    untimed ones (one round of :func:`median_of_calls`)."""
    return median_of_calls({0: lambda: fn(x)}, 1, runs, warmup)[0]


def wall_timer(fn: Callable[[], object]) -> Timer:
    """A timer around a Python call (onnxruntime's ``run``): wall time of each call."""
    def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    return run
