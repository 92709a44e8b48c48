"""Reading a JSON file that autonl wrote earlier but that anyone may have edited since (a model
folder's ``data.json``, decisions, latency tables, manifests, run settings): every such file
goes through :func:`read_json_file` and a schema (:func:`check_schema`), so that a tampered
or corrupt file is one line naming the file and the place, never a traceback or a silently
wrong result.

What the reader guarantees before a schema is even looked at:

* only a regular file is opened (a FIFO would block the read for ever, a device is not a
  file), and it is opened non-blocking, so a file swapped for a FIFO meanwhile cannot hang it;
* its size, from the file's metadata, is checked before a byte is read (``max_bytes``);
* arrays and objects nest at most ``max_depth`` levels, counted by a linear scan before the
  parser (which recurses) sees the text;
* every number is finite: ``NaN``, ``Infinity`` and literals that overflow (``1e400``) are
  refused, where Python's ``json`` would read them as floats;
* no object repeats a key (``json`` keeps the last one silently).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import jsonschema

from .errors import AutonlError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "check_schema", "loads_checked", "open_regular", "read_json_file"]

MAX_JSON_BYTES = 64 << 20      # 64 MiB: far above any file autonl writes (a 1000-class manifest is ~100 KB)
MAX_JSON_DEPTH = 64            # a graph's attribute may nest 32 levels; the files around it add a few


class _Refused(ValueError):
    """A value the reader refuses (not finite, a repeated key), raised from inside ``json``."""


def open_regular(path: str | Path, what: str, max_bytes: int | None = None):
    """``path`` opened for reading in binary mode, if it is a regular file (of at most
    ``max_bytes`` bytes, by its metadata); one line otherwise. A missing file raises
    ``FileNotFoundError`` for the caller to word."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AutonlError(f"{path}: not a regular file (a FIFO, device, socket or folder), so it is not read "
                              f"as a {what}; give the path of a {what} file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise AutonlError(f"{path}: {st.st_size:,} bytes, more than a {what} may hold ({max_bytes:,}); "
                              f"it is not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _depth_error(text: str, limit: int) -> tuple[int, int] | None:
    """(line, column) of the first bracket nested deeper than ``limit``, else None (linear)."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                pos = m.start()
                return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        elif c in "]}":
            depth -= 1
    return None


def _constant(name: str):
    raise _Refused(f"{name} is not a number a file may hold (only finite numbers are)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is not a finite number (it overflows a 64-bit float)")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"the key {repeated!r} appears twice in one object")
    return out


def loads_checked(text: str, where: str, what: str, max_depth: int = MAX_JSON_DEPTH, hint: str = "") -> Any:
    """``json.loads(text)`` with the checks of the module docstring; one line naming ``where``
    (and ending with ``hint``, what to do)."""
    deep = _depth_error(text, max_depth)
    if deep is not None:
        raise AutonlError(f"{where}:{deep[0]}:{deep[1]}: not a {what}: arrays and objects nested deeper than "
                          f"{max_depth} levels{hint}")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as e:
        raise AutonlError(f"{where}:{e.lineno}:{e.colno}: not a {what}: invalid JSON ({e.msg}){hint}") from None
    except _Refused as e:
        raise AutonlError(f"{where}: not a {what}: {e}{hint}") from None
    except RecursionError:           # below max_depth, but the interpreter's stack is smaller
        raise AutonlError(f"{where}: not a {what}: arrays and objects nested too deeply to read{hint}") from None


def read_json_file(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_JSON_DEPTH, missing: str | None = None, hint: str = "") -> Any:
    """The JSON document in ``path``, read with every check of the module docstring; one line
    naming the file otherwise (``missing``: the line for a file that does not exist; ``hint``:
    what to do, at the end of the others)."""
    path = Path(path)
    try:
        with open_regular(path, what, max_bytes) as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise AutonlError(missing or f"{path}: no such {what}") from None
    except OSError as e:
        raise AutonlError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AutonlError(f"{path}: not a {what}: not UTF-8 text (byte {e.start}){hint}") from None
    return loads_checked(text, str(path), what, max_depth, hint)


def check_schema(doc: Any, schema: dict, where: str, what: str, hint: str = "") -> Any:
    """``doc`` if it matches ``schema`` (JSON Schema); else one line naming the first place
    that does not (in document order) and ``hint`` (what to do)."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    if errors:
        e = errors[0]
        at = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        message = e.message if len(e.message) <= 160 else e.message[:157] + "..."
        raise AutonlError(f"{where}: not a valid {what}: at {at}: {message}{hint}")
    return doc
