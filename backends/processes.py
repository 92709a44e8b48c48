"""Child processes that do not outlive their parent (kept free of heavy imports: TVM's
worker processes and torchrun's workers import it first thing)."""
from __future__ import annotations

__all__ = ["die_with_parent", "python_module", "stop_process_tree"]

# Drops the working folder ('' or '.') from sys.path before anything is imported: `python -m`
# and `python -c` put it first, so a numpy.py in the folder a user runs autonl from would run.
SAFE_PATH = "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` as ``python -m module args`` does, but with the
    working folder off the import path (:data:`SAFE_PATH`; ``autonl`` also sets
    ``PYTHONSAFEPATH`` for every Python process it starts, which Python 3.11+ honours)."""
    import sys
    return [sys.executable, "-c", SAFE_PATH + f"import runpy; sys.argv[0] = {module!r}; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)", *args]


def die_with_parent() -> None:
    """In a worker process: be killed (SIGKILL) when the parent thread that started it ends.
    Linux only; elsewhere (or if prctl is unavailable) nothing."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)     # PR_SET_PDEATHSIG
        if os.getppid() != parent:                     # the parent was already gone
            os._exit(1)
    except (OSError, AttributeError):
        pass


def stop_process_tree(proc, timeout: float = 5.0) -> None:
    """Stop ``proc`` (a ``subprocess.Popen`` or a pid) and every process under it, reaped:
    SIGTERM, then SIGKILL after ``timeout`` seconds. The tree is listed before anything is
    killed: a child whose parent died is reparented and no longer found under it (a TVM
    worker still importing TVM has not yet asked to die with its parent, and once orphaned
    it would go on for up to 30 s)."""
    import subprocess

    import psutil

    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    if isinstance(proc, subprocess.Popen):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

