"""Run-folder locks (issue #22): one autonl process writes an output folder at a time. A second
writer gets one `error:` line naming the first one's PID, at once and before any work; a lock
left by a killed process is taken over; nested folders (`autonl run`) lock each level."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from autonl.backends.locks import lock_path, output_lock
from autonl.ir import AutonlError

from conftest import autonl_exe
from helpers import assert_one_line_error, start_and_sigkill

# a small search space (MobileNetV2 at width 0.35, 32x32: 0.5M to 1.5M MACs) keeps the runs short
SEARCH = ["search", "mobilenetv2", "-r", "32", "-w", "0.35", "--target-macs", "1M", "--data", "digits",
          "--steps", "12", "--warmup-steps", "5", "--batch-size", "16", "--train-size", "64", "--val-size", "32",
          "--workers", "0"]
TRAIN = ["train", "mobilenetv2", "-r", "32", "-w", "0.35", "--data", "digits", "--steps", "8",
         "--warmup-steps", "5", "--batch-size", "16", "--train-size", "64", "--val-size", "32", "--workers", "0",
         "--checkpoint-every", "4", "--eval-every", "8", "--precise-bn", "2"]

HOLD = textwrap.dedent("""
    import contextlib, sys
    from autonl.backends.locks import output_lock
    with contextlib.ExitStack() as stack:
        for folder in sys.argv[2:]:
            stack.enter_context(output_lock(folder, sys.argv[1]))
        print("locked", flush=True)
        sys.stdin.read()          # until the test closes our stdin
""")


def the_line(out, pid, what):
    return (f"{out}: another autonl process (PID {pid}, autonl {what}) is writing this folder; "
            "wait for it or pick another --out")


def hold(what, *folders):
    """A process holding the locks of ``folders``; close its stdin to let it release them."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, what, *map(str, folders)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def release(proc):
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "the first run ended before it took its lock"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_a_second_search_into_the_same_folder_is_refused_at_once(cli, tmp_path):
    run = tmp_path / "s"
    env = {k: v for k, v in os.environ.items() if k != "AUTONL_DEBUG"}
    first = subprocess.Popen([autonl_exe(), *SEARCH, "--out", str(run)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**env, "OMP_NUM_THREADS": "1"})
    try:
        wait_for(lock_path(run), first)
        # "At once" by what it skips, not by a clock (a timed test fails on a busy machine): with
        # the first one paused (it keeps its lock), the second is refused on the lock before it
        # reads anything, even a dataset that does not exist
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = cli(*SEARCH, "--out", run, "--data", tmp_path / "nope")
            still_running = first.poll() is None
        finally:
            os.kill(first.pid, signal.SIGCONT)
    finally:
        out, err = first.communicate(timeout=600)
    assert_one_line_error(second, the_line(run, first.pid, "search"))
    assert still_running, "the first search had ended before the second was refused"
    # the first one was not disturbed: it finished and its folder is whole
    assert first.returncode == 0, err[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == 12 and json.loads(out.strip().splitlines()[-1]) == result
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12        # one writer's rows, in order
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"decisions.json", "result.json", "checkpoint.pt"} <= set(manifest["files"])
    assert not lock_path(run).exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # and it resumes as a finished run does: finish again (same decisions), the lock taken and let go
    decisions = (run / "decisions.json").read_text()
    resumed = cli("search", "--out", run, "--resume", check_ok=True)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 12
    assert (run / "decisions.json").read_text() == decisions
    assert not lock_path(run).exists()


def test_a_lock_left_by_a_killed_run_does_not_block_resume(cli, tmp_path):
    run = tmp_path / "t"
    start_and_sigkill([autonl_exe(), *TRAIN, "--out", str(run)], run)
    left = lock_path(run)
    assert left.exists()                      # SIGKILL left the file; the kernel dropped the lock
    pid = left.read_text().split()[0]
    proc = cli("train", "x", "--out", run, "--resume", check_ok=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 8
    assert (run / "result.json").exists() and not left.exists()
    assert pid.isdigit()


def test_output_lock_between_two_processes(tmp_path):
    out = tmp_path / "deep" / "run"
    holder = hold("search", out)
    try:
        t0 = time.perf_counter()
        with pytest.raises(AutonlError) as e:
            with output_lock(out, "train"):
                pytest.fail("a second lock was granted")
        elapsed = time.perf_counter() - t0
        assert str(e.value) == the_line(out, holder.pid, "search")
        assert elapsed < 10, elapsed         # at once (a waiting lock would wait for the holder), however busy
        # the same folder through a symbolic link: the same lock (it was the link's own path)
        (tmp_path / "link").symlink_to(tmp_path / "deep", target_is_directory=True)
        with pytest.raises(AutonlError, match=f"PID {holder.pid}, autonl search"):
            with output_lock(tmp_path / "link" / "run", "search"):
                pytest.fail("a second lock was granted through a link")
        (tmp_path / "link").unlink()
        print(f"output_lock refused in {elapsed * 1e3:.1f} ms: {e.value}")
        assert not out.exists()
    finally:
        release(holder)
    assert not (tmp_path / "deep").exists()        # the folder made for the lock went with it
    with output_lock(out, "train") as path:
        assert path == lock_path(out) == tmp_path / "deep" / ".run.lock"
        assert path.read_text() == f"{os.getpid()} train\n"
        with output_lock(out, "train"):            # again in this process: a no-op
            pass
        assert path.exists()
        with output_lock(out / "search", "search") as inner:     # nested folders: autonl run
            assert inner == out / ".search.lock" and inner.exists()
        assert not inner.exists() and path.exists()
    assert not path.exists()
    # a released lock or an interrupted holder lets the next one in
    with pytest.raises(KeyboardInterrupt):
        with output_lock(out, "search"):
            raise KeyboardInterrupt
    holder = hold("search", out)
    release(holder)
    assert list(tmp_path.iterdir()) == []


def test_the_pid_in_a_lock_file_is_not_taken_for_a_holder(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text("1 search\n")       # PID 1 is alive, but holds no lock
    with output_lock(out, "train") as path:
        assert path.read_text() == f"{os.getpid()} train\n"


CHURN = textwrap.dedent("""
    import sys, time
    from autonl.backends.locks import output_lock
    print("ready", flush=True)
    end = time.time() + 30
    while time.time() < end:        # takes and releases the lock until the test closes our stdin
        with output_lock(sys.argv[1], "search"):
            pass
        if sys.stdin in __import__("select").select([sys.stdin], [], [], 0)[0]:
            break
""")


def test_a_lock_file_is_never_seen_without_its_holders_line(tmp_path):
    """The holder's line is in the file before the file has the lock's name (CI once refused a
    second search with 'PID unknown': it had read the file between its creation and the line)."""
    out = tmp_path / "run"
    lock_path(out).write_text("1 old\n")  # a dead holder's file: taken over (renamed over) first
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    seen = 0
    try:
        assert churn.stdout.readline().strip() == "ready"
        while seen < 300 and churn.poll() is None:
            try:
                text = lock_path(out).read_text()
            except FileNotFoundError:
                continue
            if text != "1 old\n" or seen:
                seen += 1
                assert text == f"{churn.pid} search\n", repr(text)
    finally:
        churn.stdin.close()
        churn.wait(timeout=60)
    assert churn.returncode == 0 and seen == 300
    assert list(tmp_path.iterdir()) == []          # no temporary file left beside it


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_parent(tmp_path):
    """Data-loading workers are forked from the writer: when it is SIGKILLed, they must not keep
    its lock alive."""
    out = tmp_path / "run"
    script = textwrap.dedent("""
        import os, sys, time
        from autonl.backends.locks import output_lock
        with output_lock(sys.argv[1], "train"):
            ready, tell = os.pipe()
            child = os.fork()
            if child == 0:                 # the fork hook has run by now
                os.write(tell, b"x")
                time.sleep(60)
                os._exit(0)
            os.read(ready, 1)
            print(child, flush=True)
            time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        with pytest.raises(AutonlError, match=f"PID {parent.pid}, autonl train"):
            with output_lock(out, "search"):
                pass
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        os.kill(child, 0)                          # the child still runs
        with output_lock(out, "search"):
            pass
    finally:
        for pid in (parent.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait()


def test_every_writing_command_refuses_a_locked_folder_before_any_work(cli, tmp_path):
    names = ("deploy", "derived", "run", "train", "search")
    holder = hold("compile", *(tmp_path / n for n in names))
    try:
        checks = [
            ("deploy", ["compile", "mobilenetv2", "-r", "32", "-w", "0.35", "--backend", "onnx"]),
            ("deploy", ["compile", "mobilenetv2", "-r", "32", "-w", "0.35", "--backend", "tvm", "--tune-trials",
                        "2"]),
            ("derived", ["derive", tmp_path / "no-run"]),
            ("run", ["run", "--search-steps", "2", "--train-steps", "2"]),
            ("train", ["train", "mobilenetv2", "-r", "32", "-w", "0.35", "--steps", "2"]),
            ("search", SEARCH),
        ]
        for name, args in checks:
            out = tmp_path / name
            proc = cli(*args, "--out", out)
            assert_one_line_error(proc, the_line(out, holder.pid, "compile"))
            assert not out.exists(), args
    finally:
        release(holder)
    assert list(tmp_path.iterdir()) == []


def test_two_writers_through_a_symbolic_link_get_the_lock_line(cli, tmp_path):
    """The lock is on the real path: a writer through a link to a folder another process is
    writing is refused at once (issue #36: `--out a5link --resume` ran beside the first writer)."""
    real = tmp_path / "a5"
    real.mkdir()
    link = tmp_path / "a5link"
    link.symlink_to(real)
    holder = hold("search", real)
    try:
        for args in (["compile", "mobilenetv2", "-r", "32", "-w", "0.35", "--backend", "onnx"],
                     ["search", "--resume"]):
            assert_one_line_error(cli(*args, "--out", link), the_line(link, holder.pid, "search"))
    finally:
        release(holder)
    assert list(real.iterdir()) == []


def test_a_filesystem_without_hard_links_still_gets_a_lock(tmp_path, monkeypatch):
    """Where link() is refused (FAT, some network and FUSE mounts) the lock file is created
    under its own name; a dead holder's file is still taken over, and nothing is left beside it."""
    import errno

    def no_links(*_):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "run"
    with output_lock(out, "train") as path:
        assert path == lock_path(out) and path.read_text() == f"{os.getpid()} train\n"
    lock_path(out).write_text("1 old\n")       # left by a holder that died
    with output_lock(out, "search") as path:
        assert path.read_text() == f"{os.getpid()} search\n"
    assert list(tmp_path.iterdir()) == []
