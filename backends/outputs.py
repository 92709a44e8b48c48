"""One overwrite policy for every command that writes a folder.

An existing, non-empty ``--out`` is refused with one line naming ``--force``; ``--force``
replaces the folder whole, so that a folder never mixes files of two commands (say a new
``model.onnx`` beside the ``model.int8.onnx`` of an earlier compile that its manifest no
longer lists). What ``keep`` names (a TVM tuning database, ``tuning/``) outlives the
replacement: it is a cache of measurements, valid for any later compile.

* :func:`check_output_folder` (every command that writes a folder, before anything is read or
  moved): the folder's real path (symbolic links resolved) may not be the root, the home
  folder, the working folder or an ancestor of one of them, nor hold or sit inside one of
  the command's inputs (its source, data, tables).
* :func:`replacing_folder` (``compile``, ``run``, ``train``, ``search``): the old files are
  moved aside into a hidden sibling of the folder's real path first and put back if the
  command fails or is interrupted (Ctrl-C or SIGTERM: ``autonl.backends.interrupts``),
  deleted once it succeeds; where they cannot be put back, one line names the sibling.
  ``train`` and ``search`` use it with ``keep_new_if``: once the new run has written its
  first checkpoint, an interrupted run stays (``--resume`` continues it) and the old one
  is deleted.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from autonl.ir import AutonlError

from .interrupts import held

__all__ = ["check_output_folder", "refuse_existing", "replacing_folder"]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(out: str | Path, inputs=()) -> Path:
    """``out``'s real path, or one line if writing there could destroy what is not the
    command's to destroy: the root, the home folder, the working folder (or a folder that
    holds one of them), or any of ``inputs`` (paths; names that are not paths are skipped)
    inside it or around it."""
    real = Path(os.path.realpath(out))
    if real == Path(real.anchor):
        raise AutonlError(f"--out {out}: is the root folder; give a new folder for the output")
    for what, place in (("your home folder", Path.home()), ("the working folder", Path.cwd())):
        place = Path(os.path.realpath(place))
        if _inside(place, real):
            where = "is" if place == real else "holds"
            raise AutonlError(f"--out {out}: {where} {what} ({place}); give a new folder for the output")
    for given in inputs:
        if given is None or not os.path.exists(given):
            continue
        source = Path(os.path.realpath(given))
        if _inside(source, real):
            raise AutonlError(f"--out {out}: holds the input {given}; give a folder apart from the inputs")
        if _inside(real, source):
            raise AutonlError(f"--out {out}: is inside the input {given}; give a folder apart from the inputs")
    return real


def _entries(out: Path, keep: tuple[str, ...]) -> list[Path]:
    if not out.exists():
        return []
    if not out.is_dir():
        raise AutonlError(f"{out}: exists and is not a folder")
    return sorted(e for e in out.iterdir() if e.name not in keep)


def refuse_existing(out: str | Path, force: bool, keep: tuple[str, ...] = (), hint: str = "") -> list[Path]:
    """The entries ``--force`` would replace; one line if there are any and no ``force``."""
    out = Path(out)
    old = _entries(out, keep)
    if old and not force:
        names = ", ".join(e.name for e in old[:3]) + (f" (+{len(old) - 3} more)" if len(old) > 3 else "")
        kept = f" ({', '.join(k + '/' for k in keep)} in it would be kept)" if keep else ""
        raise AutonlError(f"{out}: exists and holds {names}; give another --out, or --force to replace it"
                          f"{kept}{hint}")
    return old


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing_folder(out: str | Path, force: bool, keep: tuple[str, ...] = (), hint: str = "",
                     keep_new_if=None, inputs=()):
    """Run the body with ``out`` empty but for ``keep``; see the module docstring."""
    given = out
    out = check_output_folder(out, inputs)
    old = refuse_existing(out, force, keep, hint)
    if not old:
        yield Path(given)
        return
    aside, moved = None, []
    try:
        with held():    # a signal during the renames is raised once they are all done (and put back)
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            for e in old:
                e.rename(aside / e.name)
                moved.append(e.name)
        yield Path(given)
    except BaseException:
        with held():    # and one during the putting back waits until it is done
            if len(moved) == len(old) and keep_new_if is not None and keep_new_if(out):
                shutil.rmtree(aside, ignore_errors=True)
                raise
            try:
                unmoved = tuple(e.name for e in old if e.name not in moved)    # a rename that failed
                for e in _entries(out, keep + unmoved):        # what the failed command wrote
                    _remove(e)
                for name in moved:
                    (aside / name).rename(out / name)
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
            except OSError as e:
                print(f"error: {out}: could not put the old files back ({e.strerror or e}); they are in {aside}",
                      file=sys.stderr)
            raise
    with held():        # the old files are deleted whole, never half
        shutil.rmtree(aside, ignore_errors=True)
