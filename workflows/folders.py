"""The run-folder and output-folder policy of the commands: where a command may write
(:func:`writer_lock`: never the root, home or working folder, nor around or inside one of its
inputs, and one writer at a time), a new run's folder (:func:`new_run`: refused when it holds
anything, replaced with ``--force``, kept as it is on ``--resume``), and an output file
(:func:`check_out_file`: its folder exists, it is not a folder)."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from autonl.ir import AutonlError

__all__ = ["check_out_file", "new_run", "writer_lock"]


def writer_lock(out, what: str, inputs=()) -> AbstractContextManager:
    """Check ``out`` against the output-folder policy (:func:`autonl.backends.outputs.
    check_output_folder`) now, and return its writer lock (:func:`autonl.backends.locks.
    output_lock`) for the caller to hold until the command ends. The library takes the same
    lock again when it writes, which is a no-op inside one process."""
    from autonl.backends.locks import output_lock
    from autonl.backends.outputs import check_output_folder
    check_output_folder(out, inputs)
    return output_lock(out, what)


def new_run(out: str, resume: bool, force: bool, here: bool = True) -> AbstractContextManager:
    """A new run's --out: refused if it holds anything (one line naming --resume and --force),
    replaced with --force (:mod:`autonl.backends.outputs`); a resumed run, or a torchrun
    worker (its launcher did this), as it is."""
    from autonl.backends.outputs import replacing_folder
    if resume or not here:
        return nullcontext()
    return replacing_folder(out, force, hint=" (or --resume to continue the run in it)",
                            keep_new_if=lambda folder: (folder / "checkpoint.pt").exists())


def check_out_file(path: str) -> None:
    """Refuse an output file in a folder that does not exist, before any work."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise AutonlError(f"--out {path}: folder {parent} does not exist")
    if Path(path).is_dir():
        raise AutonlError(f"--out {path} is a folder; give a file name, e.g. {Path(path) / 'table.json'}")
