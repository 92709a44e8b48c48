"""The ``autonl`` console script. Ctrl-C or SIGTERM while the command's modules are still
being imported (torch, onnx and TVM take seconds) gives the same one line as later on, not a
traceback from deep inside an import: this module imports nothing heavy, catches both
signals until :func:`autonl.cli.main.main` installs the real handling
(:mod:`autonl.backends.interrupts`), then hands over."""
from __future__ import annotations

import os
import signal
import sys

__all__ = ["run"]


def _early(signum, frame):     # nothing has been written yet: there is nothing to clean up
    os.write(2, b"error: interrupted\n" if signum == signal.SIGINT else b"error: terminated (SIGTERM)\n")
    os._exit(130 if signum == signal.SIGINT else 143)


def run() -> None:
    """Console-script entry point."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:    # a background job keeps ignoring Ctrl-C
            signal.signal(sig, _early)
    from .main import main
    code = main()

    def _late(signum, frame):   # the command is over: exit now, not from inside an atexit callback
        if not code:            # it had succeeded: say why the exit code is not 0, and that its work is whole
            os.write(2, b"error: interrupted" if signum == signal.SIGINT else b"error: terminated (SIGTERM)")
            os.write(2, b" as the command was exiting; what it wrote is complete\n")
        os._exit(code or 128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _late)
    sys.exit(code)
