"""Child processes that do not outlive their parent (kept free of heavy imports: TVM's
worker processes and torchrun's workers import it first thing)."""
from __future__ import annotations

__all__ = ["die_with_parent"]


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
