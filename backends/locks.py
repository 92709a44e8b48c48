"""One writer per output folder: an exclusive lock that search, train, derive, compile and
``autonl run`` hold while they write.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a file *beside* the folder,
``<parent>/.<name>.lock``, so it exists before the folder does and covers derive's
temporary-folder-then-rename. The holder writes its PID and command into the file; a second
writer gets one line naming them, before it does any work, instead of waiting.

The PID text is only a label for that line: whether a lock is held is the kernel's answer to
``flock``, never the text. A process that dies, even by SIGKILL, loses its lock with its last
file descriptor, so the file it leaves behind is taken over by the next writer. The holder's
line is written into a new file under a temporary name that is then linked (or, over a dead
holder's file, renamed) to the lock's name, so the lock file is never seen without it. Children that
a holder forks (e.g. data-loading workers) close their copy of the descriptor at once, so
the lock does not outlive the holder. On release (success, error or Ctrl-C) the holder
removes the file while it still holds the lock; a writer that opened the old file meanwhile
sees that it was replaced or removed and tries again.

Nested outputs (``autonl run`` locks ``runs/r`` and then search locks ``runs/r/search``) are
different lock files; locking a folder this process already holds again is a no-op.

A multi-process search (``autonl search --nproc N``) takes the lock in the command itself,
before it starts torchrun, and tells the workers so through ``$AUTONL_LOCK_HELD_BY_PARENT``
(the lock file's path): rank 0 then writes under its parent's lock. A second writer is
refused in one line before torchrun starts.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autonl.ir import AutonlError

__all__ = ["HELD_BY_PARENT", "lock_path", "output_lock"]

HELD_BY_PARENT = "AUTONL_LOCK_HELD_BY_PARENT"

_HELD: dict[str, tuple[Path, int]] = {}   # lock_path(out) -> (lock file, descriptor) held here
_GUARD = threading.Lock()


def _drop_inherited() -> None:
    """In a forked child: close the inherited descriptors (the parent keeps its locks; the
    child must not keep them alive after the parent is gone) and forget them."""
    global _GUARD
    for _, fd in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()
    _GUARD = threading.Lock()


os.register_at_fork(after_in_child=_drop_inherited)


def lock_path(out: str | Path) -> Path:
    """The lock file of output folder ``out``: ``<parent>/.<name>.lock``, of its real path
    (symbolic links resolved), so that two names of one folder share one lock."""
    folder = Path(os.path.realpath(out))
    return folder.parent / f".{folder.name}.lock"


def _holder(fd: int) -> tuple[str, str]:
    """(PID, command) as the holder wrote them: before the file got its name, except on a
    filesystem without hard links, where an empty file is read again for a moment."""
    text = ""
    for _ in range(20):
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        if text:
            break
        time.sleep(0.01)
    pid, _, what = text.partition(" ")
    return (pid if pid.isdigit() else "unknown"), (what or "?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:               # another user's process: alive
        return True
    return True


def _make_parents(folder: Path, out: Path) -> list[Path]:
    """Create ``folder`` and the folders above it that are missing; return those created,
    deepest last."""
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise AutonlError(f"{out}: cannot create the output folder: {probe} is not a folder")
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            pass
        except OSError as e:
            _remove_empty(created)
            raise AutonlError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    return created


def _remove_empty(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _fresh(path: Path, what: str) -> tuple[int, Path]:
    """A new file beside ``path`` that already holds our PID and command, locked by us: (its
    descriptor, its temporary name). It gets the lock's name only once its text is written, so
    a second writer never finds a lock file without its holder's line (not even when the
    holder is paused between creating and writing it)."""
    tmp = path.parent / f"{path.name}.{os.getpid()}.{threading.get_ident()}.new"
    _unlink(tmp)        # one a killed process of the same PID left behind
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, _line(what), 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # nobody else knows this file yet
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    return fd, tmp


def _line(what: str) -> bytes:
    return f"{os.getpid()} {what}\n".encode()


def _create_in_place(path: Path, what: str) -> int | None:
    """For a filesystem without hard links (FAT, some network and FUSE mounts): create the lock
    file under its own name, lock it, then write the line (a reader may find it empty for a
    moment: :func:`_holder` reads again). None when the name is taken."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, _line(what), 0)
    except BlockingIOError:       # opened and locked by another writer in between: it is theirs
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _acquire(path: Path, out: Path, what: str) -> tuple[int, list[Path]]:
    """Lock ``path``: (its descriptor, the folders made for it)."""
    created: list[Path] = []
    try:
        for _ in range(100):
            created += _make_parents(path.parent, out)
            try:
                fd, tmp = _fresh(path, what)
            except FileNotFoundError:     # its folder was removed by a writer that just finished
                continue
            try:
                try:
                    os.link(tmp, path)    # atomic: fails when a lock file is there already
                    return fd, created
                except FileExistsError:
                    pass
                except OSError as e:
                    if e.errno not in _NO_LINKS:
                        raise
                    placed = _create_in_place(path, what)
                    if placed is not None:
                        os.close(fd)
                        return placed, created
                if _take_over(path, tmp, out):
                    return fd, created
            except BaseException:
                os.close(fd)
                raise
            finally:
                _unlink(tmp)
            os.close(fd)
        raise AutonlError(f"{out}: could not take the lock {path}; another process keeps replacing it")
    except BaseException:
        _remove_empty(created)
        raise


def _take_over(path: Path, tmp: Path, out: Path) -> bool:
    """``path`` exists: raise the one-line error when its holder is alive; when it was left by a
    process that died, replace it by ``tmp`` (ours, locked, with our line) and return True;
    return False to try again (it was removed or replaced meanwhile)."""
    try:
        old = os.open(path, os.O_RDONLY | os.O_CLOEXEC)     # flock needs no write access
    except FileNotFoundError:             # its holder released it just now
        return False
    try:
        try:
            fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _same_file(old, path):     # replaced meanwhile: read the new one
                return False
            pid, holder = _holder(old)
            if pid.isdigit() and not _alive(int(pid)):
                # a dead holder's line in a locked file: another writer is taking it over just
                # now (it renames its own file over this one): read that one instead
                time.sleep(0.05)
                if not _same_file(old, path):
                    return False
            raise AutonlError(f"{out}: another autonl process (PID {pid}, autonl {holder}) is writing this "
                              "folder; wait for it or pick another --out") from None
        if not _same_file(old, path):     # the holder before us removed the file after we opened it
            return False
        os.replace(tmp, path)             # we hold the dead holder's lock: nobody takes it meanwhile
        return True
    finally:
        os.close(old)


def _lock(out: Path, what: str) -> tuple[Path, int, list[Path]]:
    """Lock ``out`` beside it; inside it when the folder exists but its parent cannot be
    written (``--out .`` in a folder whose parent is not ours)."""
    path = lock_path(out)
    try:
        return (path, *_acquire(path, out, what))
    except PermissionError:
        if not out.is_dir():
            raise AutonlError(f"{out}: cannot create the output folder: {path.parent} is not writable") from None
    except OSError as e:
        if e.errno != errno.EROFS or not out.is_dir():
            raise AutonlError(f"{out}: cannot create the lock file {path}: {e.strerror or e}") from None
    path = out / ".autonl.lock"
    try:
        return (path, *_acquire(path, out, what))
    except OSError as e:
        raise AutonlError(f"{out}: cannot create the lock file {path}: {e.strerror or e}") from None


def _release(path: Path, fd: int, created: list[Path]) -> None:
    try:
        os.unlink(path)                   # still locked: nobody can take the old file meanwhile
    except OSError:
        pass
    os.close(fd)
    _remove_empty(created)                # folders made only for the lock, when nothing else went there


@contextmanager
def output_lock(out: str | Path, what: str, enabled: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of output folder ``out`` for ``autonl {what}``; yield the lock
    file's path. Raise :class:`AutonlError` at once, without waiting, when another process
    holds it. ``enabled=False`` locks nothing (the ranks of a torchrun job that do not write)."""
    out = Path(out)
    key = str(lock_path(out))
    if enabled and os.environ.get(HELD_BY_PARENT) == key:
        yield lock_path(out)          # the autonl command that started this torchrun job holds it
        return
    with _GUARD:
        held = _HELD.get(key) if enabled else (lock_path(out), -1)
        if held is None:
            path, fd, created = _lock(out, what)
            _HELD[key] = (path, fd)
    if held is not None:              # not enabled, or already ours (a nested call on the same folder)
        yield held[0]
        return
    try:
        yield path
    finally:
        with _GUARD:
            entry = _HELD.pop(key, None)
            if entry == (path, fd):   # not when a forked child unwinds its copy of the stack
                _release(path, fd, created)
