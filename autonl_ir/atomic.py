"""``atomic_write``: a reader sees the old file or the whole new one, never half of one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import AutonlError


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: a reader
    sees the old file or the whole new one, never half of one. A symbolic link is written
    through (its target is replaced, the link stays); a path that is not a regular file (a
    device such as /dev/full, a FIFO, a folder) is refused: renaming over it would replace it."""
    path = Path(path)
    # what the path names, links followed as the kernel follows them (/dev/stdout is a link to
    # /proc/self/fd/1, whose target a path cannot spell when it is a pipe)
    if path.exists() and not path.is_file():
        raise AutonlError(f"{path}: is not a regular file (a device, FIFO or folder); give a file path to write")
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise AutonlError(f"{path}: is not a regular file (a device, FIFO or folder); give a file path to write")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AutonlError(f"{path}: the folder {parent} does not exist")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise AutonlError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        # mkstemp makes the file 0600; give it the old file's mode, or the usual 0644
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise AutonlError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:     # Ctrl-C or SIGTERM, even one just after the rename (then tmp is gone)
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
