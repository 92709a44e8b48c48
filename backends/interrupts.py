"""Ctrl-C and SIGTERM that always stop a command, and stop it through its clean-up.

Python's own SIGINT handler raises ``KeyboardInterrupt`` wherever the interpreter is. When
that is inside a finaliser (a ``__del__``, a weakref callback: tensors, temporary files and
progress bars have them) Python prints "Exception ignored in ..." with a traceback and goes
on: the interrupt is lost and the command runs to its end. On a busy machine more of the time
is spent there, and a test that pressed Ctrl-C during a search waited for a search of 300
steps. SIGTERM, by default, kills the process at once: no ``finally`` runs, so a folder being
replaced stays half-replaced.

:func:`install` (the CLI calls it first thing) makes both signals record themselves and raise
``KeyboardInterrupt``; :func:`check` raises it again, at a safe point (each training or
search step), when a recorded signal was swallowed. SIGTERM then unwinds like Ctrl-C:
every ``finally`` and context manager runs (an output folder being replaced is put back),
and the command exits with 143 (128 + SIGTERM) instead of Ctrl-C's 130.
"""
from __future__ import annotations

import signal

__all__ = ["check", "held", "install", "received"]

_received: list[int] = []
_holding = [0]          # > 0 inside held(): a signal is recorded, and raised when the hold ends


def _handler(signum, frame):
    _received.append(signum)
    if not _holding[0]:
        raise KeyboardInterrupt


class held:
    """A few steps that must all happen or none (the renames that set an output folder aside
    or put it back): Ctrl-C and SIGTERM during them are recorded and raised as
    ``KeyboardInterrupt`` once they are done, unless an exception is already on its way out.
    Python runs signal handlers in the main thread, so this holds whatever thread the signal
    reached."""

    def __enter__(self):
        self.before = len(_received)
        _holding[0] += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        _holding[0] -= 1
        if exc_type is None and not _holding[0] and len(_received) > self.before:
            raise KeyboardInterrupt
        return False


def install() -> None:
    """Handle SIGINT (unless it is ignored: a command started in the background keeps
    ignoring it, as a shell expects) and SIGTERM. Main thread only. Forgets earlier signals."""
    _received.clear()
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handler)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _handler)


def received() -> int | None:
    """The first signal received (SIGINT or SIGTERM), or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a signal came and its exception was swallowed."""
    if _received:
        raise KeyboardInterrupt
