"""The ``autonl`` command. Commands are thin: parse options, call a workflow, print; they
live in one module per group (graph_cmds, train_cmds, deploy_cmds).

Every failure caused by input prints one line ``error: ...`` and exits non-zero
(1 for bad input, 2 for a bad command line); set ``AUTONL_DEBUG=1`` for tracebacks.
"""
from __future__ import annotations

import os
import signal
import sys

import click

from autonl.backends import interrupts

from autonl.ir import AutonlError

from . import deploy_cmds, graph_cmds, latency_cmds, train_cmds  # noqa: F401  (add their commands to the group)
from .app import cli

__all__ = ["cli", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one ``error:`` line and an exit code."""
    debug = os.environ.get("AUTONL_DEBUG") == "1"
    interrupts.install()       # Ctrl-C and SIGTERM unwind through every clean-up (backends/interrupts.py)
    # no Python process this one starts (TVM's workers, torchrun's) imports from the working
    # folder, where `python -m` would look first (Python 3.11+; autonl's own children also
    # drop it themselves: backends/processes.py)
    os.environ["PYTHONSAFEPATH"] = "1"
    from .options import WRITING
    WRITING.clear()            # what this command writes (main may run again in one process: the tests)
    try:
        rv = cli.main(args=argv, prog_name="autonl", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):   # Abort: click's name for it inside a command
        return _interrupted()
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except AutonlError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return 1
    except BrokenPipeError:
        return 1
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        return 1
    except Exception as e:  # a bug in autonl, not bad input: still one line, with the way to more
        if interrupts.received():   # a signal that landed in an extension's import became ImportError & co.
            return _interrupted()
        if debug:
            raise
        if _out_of_memory(e):
            click.echo(f"error: out of memory: {_first_line(e)}; this machine (or its memory limit) cannot hold what "
                       f"the command needs: use a smaller input (-r), batch or width, or run where there is more "
                       f"memory", err=True)
            return 1
        click.echo(f"error: internal error: {type(e).__name__}: {e} (set AUTONL_DEBUG=1 for the traceback)",
                   err=True)
        return 3


# What running out of memory says in torch (CPU and CUDA), onnxruntime, TVM and numpy (whose
# _ArrayMemoryError is a MemoryError)
_NO_MEMORY = ("can't allocate memory", "out of memory", "failed to allocate memory", "bad_alloc",
              "cannot allocate memory")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(s in str(e).lower() for s in _NO_MEMORY)


def _first_line(e: BaseException) -> str:
    """The gist of an allocator's message: its first line, without torch's '[enforce fail at
    FILE:LINE]' prefix, at most 200 characters."""
    import re
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", text)
    return text[:200] or type(e).__name__


def _interrupted() -> int:
    """One line and the shell's exit code for Ctrl-C (130) or SIGTERM (143), wherever the
    signal landed (inside a command click calls it Abort; elsewhere it is KeyboardInterrupt)."""
    from .options import resume_hint
    if interrupts.received() == signal.SIGTERM:
        click.echo(f"error: terminated (SIGTERM){resume_hint()}", err=True)
        return 143
    click.echo(f"error: interrupted{resume_hint()}", err=True)
    return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
