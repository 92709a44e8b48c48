"""One overwrite policy for every command that writes a folder.

An existing, non-empty ``--out`` is refused with one line naming ``--force``; ``--force``
replaces the folder whole, so that a folder never mixes files of two commands (say a new
``model.onnx`` beside the ``model.int8.onnx`` of an earlier compile that its manifest no
longer lists). What ``keep`` names (a TVM tuning database, ``tuning/``) outlives the
replacement: it is a cache of measurements, valid for any later compile.

* :func:`replacing_folder` (``compile``): the old files are moved aside into a hidden
  sibling first and put back if the command fails or is interrupted, deleted once it
  succeeds.
  ``train`` and ``search`` use it with ``keep_new_if``: once the new run has written its
  first checkpoint, an interrupted run stays (``--resume`` continues it) and the old one
  is deleted.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from autonl.ir import AutonlError

__all__ = ["refuse_existing", "replacing_folder"]


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
                     keep_new_if=None):
    """Run the body with ``out`` empty but for ``keep``; see the module docstring."""
    out = Path(out)
    old = refuse_existing(out, force, keep, hint)
    if not old:
        yield out
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    for e in old:
        e.rename(aside / e.name)
    try:
        yield out
    except BaseException:
        if keep_new_if is not None and keep_new_if(out):
            shutil.rmtree(aside, ignore_errors=True)
            raise
        for e in _entries(out, keep):        # what the failed command wrote
            _remove(e)
        for e in aside.iterdir():
            e.rename(out / e.name)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
