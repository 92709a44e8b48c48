"""Threads on a shared machine (issue #40, autonl.backends.cpu): torch's threads follow the CPUs
that other processes leave free, a count the user fixed stays, and the loop says so."""
import subprocess
import sys
import time

import pytest

from autonl.backends import cpu


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    monkeypatch.setattr(cpu, "_chosen", {})


def test_the_start_count_and_who_fixed_it(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu, "usable_cpus", lambda: 8)
    assert cpu.torch_threads(3) == (3, "--threads")
    assert cpu.torch_threads(None)[0] == 8 and "8 usable CPUs" in cpu.torch_threads(None)[1]
    assert cpu.torch_threads(None, processes=3)[0] == 2          # torchrun's share
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert cpu.torch_threads(None) == (5, "OMP_NUM_THREADS")
    cpu.note_choice(5, "OMP_NUM_THREADS")
    assert "5 torch threads (OMP_NUM_THREADS)" == cpu.threads_line(5)
    assert not cpu.FreeCores(lambda n: None, 5).enabled           # fixed by the user: never changed


def test_the_count_follows_what_other_processes_leave_free(monkeypatch):
    """Measured windows, fed in: (wall, machine busy CPU-s, this process's CPU-s)."""
    clock = {"now": (0.0, 0.0, 0.0)}
    monkeypatch.setattr(cpu, "busy_seconds", lambda: clock["now"])
    monkeypatch.setattr(cpu, "_now", lambda: clock["now"][0])
    set_to = []
    cpu.note_choice(4, "4 usable CPUs")
    fit = cpu.FreeCores(set_to.append, 4, every_s=2.0, cpus=4)
    assert fit.enabled and fit.tick() == 4 and set_to == []

    def window(seconds, machine_cpus, mine_cpus):
        w, b, m = clock["now"]
        clock["now"] = (w + seconds, b + seconds * machine_cpus, m + seconds * mine_cpus)
        return fit.tick()

    assert window(1.0, 4, 2) == 4                       # under every_s: not measured yet
    assert window(1.5, 4.0, 2.0) == 2 and set_to == [2]  # two CPUs busy elsewhere
    assert window(2.0, 2.9, 1.9) == 3                    # one left (1.0 busy elsewhere: one thread less)
    assert window(2.0, 3.1, 3.0) == 4                    # all free again (0.1 elsewhere)
    assert window(2.0, 4.0, 0.0) == 1                    # all four busy elsewhere: at least one
    assert set_to == [2, 3, 4, 1] and fit.changes == 4


def test_beside_a_busy_process_a_real_window_takes_a_thread_away():
    """With a real CPU-bound process beside it, one measured window (this process busy too)
    sets fewer threads than the CPUs."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        cpus = cpu.usable_cpus()
        if cpus < 2:
            pytest.skip("one CPU: nothing to take away")
        set_to = []
        fit = cpu.FreeCores(set_to.append, cpus, every_s=1.0, enabled=True)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:       # this process busy, as a training step is
            fit.tick()
        assert set_to and 1 <= set_to[-1] < cpus, set_to
    finally:
        hog.kill()
        hog.wait()


def test_train_says_its_threads(cli, tmp_path):
    proc = cli("train", "mobilenetv2", "-r", "32", "-w", "0.35", "--data", "digits", "--steps", "2",
               "--batch-size", "8", "--train-size", "16", "--val-size", "8", "--workers", "0", "--threads", "1",
               "--out", tmp_path / "r", check_ok=True)
    assert "threads: 1 torch thread (--threads)" in proc.stderr


def test_timing_says_when_other_processes_kept_the_cpus_busy():
    """Latency timing keeps the deployed thread count and does not follow the load; it says
    when the machine was busy instead of printing a slowed figure silently."""
    from autonl.backends.latency.timing import Effort, busy_warning, measure_all, wall_timer

    assert busy_warning(0.3, 2, 2) is None
    line = busy_warning(1.0, 2, 2)
    assert line.startswith("warning: other processes kept 1.0 of this machine's 2 CPUs busy") and "shared cores" in line
    assert "shared cores" not in busy_warning(1.0, 4, 3)
    assert busy_warning(1.0, 4, 1) is None and busy_warning(10.0, 64, 4) is None    # cores to spare
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        run = measure_all({"sum": wall_timer(lambda: sum(range(20000)))}, Effort(rounds=3, round_seconds=0.3))
    finally:
        hog.kill()
        hog.wait()
    assert run.cpus == cpu.usable_cpus()
    assert run.others_cpus >= 0.5, run                    # the hog: about one CPU
    assert run.busy_warning(1) is not None
