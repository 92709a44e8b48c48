import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (scripts/test.sh runs one worker per CPU) each worker gets one torch
# thread, and so does every command it starts: the workers together use the machine's cores,
# none waits on a sibling thread that another worker's process holds. Set before torch loads.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

# Every process the suite starts inherits this mark (through the environment), so that the
# processes it leaves behind are found even after they were orphaned (reparented to PID 1),
# where `children()` of this process no longer sees them. Fresh per session: other
# sessions running at the same time on the machine have their own.
SESSION_MARK = "AUTONL_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
LEFTOVER_GRACE_S = 10.0


def autonl_exe() -> str:
    exe = Path(sys.executable).parent / "autonl"
    if not exe.exists():
        pytest.fail("the `autonl` command is not installed next to this Python; run scripts/setup.sh")
    return str(exe)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def suite_processes(mark: str | None = None) -> dict[int, psutil.Process]:
    """Live processes started by this session (its descendants, and any process whose
    environment carries the session's mark, orphans included), this process excluded."""
    mark = mark or os.environ[SESSION_MARK]
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for p in psutil.process_iter():
        if p.pid == me.pid or p.pid in found:
            continue
        try:
            if p.environ().get(SESSION_MARK) == mark:
                found[p.pid] = p
        except psutil.Error:      # gone, a zombie, or another user's
            pass
    return {pid: p for pid, p in found.items() if _alive(p)}


def describe(p: psutil.Process) -> str:
    try:
        started_by = p.environ().get("PYTEST_CURRENT_TEST", "?")
        return f"pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:160]} [started during {started_by}]"
    except psutil.Error:
        return f"pid {p.pid}"


def leftovers(before: set[int] = frozenset(), grace: float = LEFTOVER_GRACE_S) -> list[psutil.Process]:
    """The session's processes not in ``before`` that are still alive after ``grace`` seconds."""
    deadline = time.time() + grace
    while True:
        left = [p for pid, p in suite_processes().items() if pid not in before]
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.25)


def stop_process_tree(proc, timeout: float = 10.0) -> None:
    """Stop ``proc`` (a Popen or a pid) and every process under it (the project's own helper)."""
    from autonl.backends.processes import stop_process_tree as stop
    stop(proc, timeout)


@pytest.fixture(autouse=True)
def no_leftover_processes_per_test():
    """Each test (with its function fixtures) stops every process it started."""
    before = set(suite_processes())
    yield
    left = leftovers(before)
    if left:
        text = "; ".join(describe(p) for p in left)
        for p in left:
            stop_process_tree(p.pid)
        pytest.fail(f"{len(left)} process(es) still running {LEFTOVER_GRACE_S:g} s after the test: {text}")


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes():
    """The session ends with no process it started still running (orphans included)."""
    yield
    left = leftovers()
    if left:
        text = "; ".join(describe(p) for p in left)
        for p in left:
            stop_process_tree(p.pid)
        pytest.fail(f"the test session left {len(left)} process(es) running: {text}")



def _terminal_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: warnings filtered and shown as a new interpreter
    does on a terminal (pytest records them instead; tests read those lines)."""
    import warnings
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def run_in_process(args: list[str], cwd=None, env=None) -> subprocess.CompletedProcess:
    """``autonl ARGS`` through ``autonl.cli.main.main`` in this process: what the command
    writes to file descriptors 1 and 2 (click, tqdm, TVM's C++ logging, processes it starts)
    captured, with the environment, working folder, signal handlers, warning filters and
    torch's thread count it may change put back afterwards. Saves the 2-3 s of a new Python
    importing torch, onnx and TVM per call, which summed to minutes over the suite."""
    import io
    import signal
    import tempfile
    import warnings

    from autonl.cli.main import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch is not None else None
    saved_streams = sys.stdout, sys.stderr
    for stream in saved_streams:
        stream.flush()
    saved_fds = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        try:
            os.environ.pop("AUTONL_DEBUG", None)
            os.environ.update(env or {})
            if cwd is not None:
                os.chdir(cwd)
            os.dup2(out_f.fileno(), 1)
            os.dup2(err_f.fileno(), 2)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True,
                                          errors="backslashreplace")
            with warnings.catch_warnings():
                _terminal_warnings()
                code = main([str(a) for a in args])
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            for sig, handler in saved_signals.items():
                signal.signal(sig, handler)
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(saved_threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or
                                      torch.get_num_threads())
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read().decode("utf-8", "replace")
        err = err_f.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(["autonl", *map(str, args)], code, out, err)


# Commands that may time onnxruntime: they make the process's one shared onnxruntime thread
# pool (backends/onnx/runtime.py), after which onnxruntime refuses any session with threads of
# its own in that process, onnxruntime.quantization's and the tests' own included. They run
# as real commands, so that no test depends on which commands ran before it in its worker.
TIMING_COMMANDS = {"latency-table", "latency-check", "bench", "run"}


@pytest.fixture
def cli():
    """Run ``autonl ARGS``; returns a CompletedProcess (text). In this process by default
    (:func:`run_in_process`: the command's logic, exit code and output are the same);
    ``real=True`` starts the installed command instead, for what needs a process of its own
    (a timeout, a fresh interpreter's imports, a command line re-run by torchrun), as do the
    :data:`TIMING_COMMANDS` unless ``real=False``. On a timeout or an interrupt a real command is
    stopped with every process under it."""

    def run(*args, cwd=None, check_ok=False, timeout=300, env=None, real=None):
        if real is None:
            real = str(args[0]) in TIMING_COMMANDS
        if real:
            env = {**{k: v for k, v in os.environ.items() if k != "AUTONL_DEBUG"}, **(env or {})}
            cmd = [autonl_exe(), *map(str, args)]
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                  env=env) as p:
                try:
                    out, err = p.communicate(timeout=timeout)
                except BaseException:
                    stop_process_tree(p)
                    raise
            proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        else:
            proc = run_in_process(list(args), cwd=cwd, env=env)
        if check_ok and proc.returncode != 0:
            pytest.fail(f"autonl {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rpc_server_on_loopback(timeout: float = 60.0):
    """A host TVM RPC server on loopback (``HOST:PORT``), stopped with its worker process and
    the session processes it forks. (``tvm.exec.rpc_server`` runs the server in a
    ``tvm.exec.popen_worker`` child: killing only the server's own process orphans it.)"""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                             str(port), "--port-end", str(port + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("the RPC server did not start")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_tree(proc)


def shared_artifact(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test session, whatever the number of xdist workers: the
    first worker to ask builds it under a file lock in the session's shared temporary folder,
    the others wait and reuse it. A failed build is remembered, so that every test that
    needs it fails at once with the first failure's text instead of building it again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent           # shared by the workers of this session
    folder, done, failed = base / f"shared-{name}", base / f"shared-{name}.done", base / f"shared-{name}.failed"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            pytest.fail(f"building the shared artefact {name} failed earlier in this session:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException as e:
                failed.write_text(str(e) or type(e).__name__)
                raise
            done.touch()
    return folder


def run_or_fail(args: list, what: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command for a fixture; a failure fails the test with its stderr."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A small AutoNL-S (32x32, width 0.35, 10 classes) trained briefly on the built-in digits:
    a model folder with real, non-random weights for the deployment backends' tests."""
    def build(folder):
        run_or_fail([autonl_exe(), "train", "autonl-s", "--data", "digits", "--resolution", "32", "--width", "0.35",
                     "--steps", "80", "--batch-size", "64", "--lr", "0.05", "--eval-every", "80", "--precise-bn",
                     "10", "--threads", "1", "--out", folder / "run"], "training the fixture model")
        # --threads 1: the same weights on every machine and load (a step's sums depend on the
        # thread count, which otherwise follows the free CPUs), so int8's agreement with fp32
        # is checked on one model, not on whichever the load produced
    return shared_artifact(tmp_path_factory, "trained", build) / "run" / "model"


AUTONL_S_SMALL = ["autonl-s", "-r", "32", "-w", "0.35", "--classes", "10"]


@pytest.fixture(scope="session")
def autonl_s_builds(tmp_path_factory):
    """AutoNL-S at 32 px, width 0.35, 10 classes, random weights (seed 0), compiled once per
    session: ``host`` (TVM, this machine), ``arm64`` (TVM with the cross-built runner) and
    ``onnx``; tests that change a folder work on a copy."""
    from autonl.backends.tvm.remote import find_runtime, runtime_dir
    if find_runtime() is None:
        pytest.fail(f"no aarch64 TVM runtime in {runtime_dir()}: run scripts/fetch_arm_runtime.sh "
                    f"(scripts/test.sh does)")

    def build(folder):
        for name, args in (("host", ["--backend", "tvm", "--target", "host"]),
                           ("arm64", ["--backend", "tvm", "--target", "arm64"]), ("onnx", ["--backend", "onnx"])):
            run_or_fail([autonl_exe(), "compile", *AUTONL_S_SMALL, *args, "--out", folder / name],
                        f"autonl compile {' '.join(args)}")
    root = shared_artifact(tmp_path_factory, "autonl-s-builds", build)
    return {name: root / name for name in ("host", "arm64", "onnx")}


# The longest tests (over 40 s each on the 2-core machine, --durations) start first on every
# worker, so that the many short ones fill in around them instead of one long test running
# alone at the end. xdist's worksteal gives each worker a contiguous share of the list to start
# with, so the long tests are dealt to the shares in turn, each at the front of its share.
LONG_FIRST = (
    "tests/test_tvm_tuning.py::test_tune_space_covers_every_derived_network",
    "tests/test_run.py::",
    "tests/test_docs.py::test_every_command_in_the_guide_runs",
    "tests/test_tvm_deploy.py::test_tuning_killed_keeps_its_records_resumes_and_its_database_is_reused",
    "tests/test_tvm_deploy.py::test_tuning_on_an_emulated_arm64_board_over_rpc",
    "tests/test_tvm_deploy.py::test_tuning_over_rpc_writes_a_database_that_a_second_compile_reuses",
    "tests/test_search_scale.py::test_two_process_resume_after_sigkill_gives_the_same_decisions",
    "tests/test_latency.py::test_tvm_tables_on_the_host_and_over_rpc",
    "tests/test_latency.py::test_bad_latency_input_gets_one_line_and_writes_nothing",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), None)
    long = sorted((it for it in items if rank(it) is not None), key=rank)
    rest = [it for it in items if rank(it) is None]
    workers = config.getoption("numprocesses", None) if config.pluginmanager.hasplugin("xdist") else None
    n = workers if isinstance(workers, int) and workers > 1 else 1
    size = -(-len(items) // n)
    shares = [long[i::n] for i in range(n)]
    ordered = []
    for share in shares:
        take = max(0, size - len(share))
        ordered += share + rest[:take]
        rest = rest[take:]
    items[:] = ordered + rest
