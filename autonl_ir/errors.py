"""Exceptions raised for bad user input.

Every error a user can cause derives from :class:`AutonlError`; the CLI prints
``error: <message>`` for these and exits non-zero, never a traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class AutonlError(Exception):
    """Base class for errors caused by user input (files, names, options)."""


class ParseError(AutonlError):
    """A file could not be parsed; carries the position for ``FILE:LINE:COL`` messages."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<string>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class VerifyError(AutonlError):
    """The graph is malformed; the message names the node and the problem."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None):
        self.message = message
        self.node = node
        self.op = op
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.node is None:
            return self.message
        who = f"node %{self.node}" + (f" ({self.op})" if self.op else "")
        return f"{who}: {self.message}"


class TypeInferenceError(AutonlError):
    """An op cannot produce a type for these inputs and attributes (raised without node context)."""


class UnknownNameError(AutonlError, LookupError):
    """A name that is not in a registry; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str], plural: str | None = None):
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(known) if known else "(none)"
        plural = plural or (kind + "es" if kind.endswith("s") else kind + "s")
        super().__init__(f"unknown {kind} '{name}';{hint} known {plural}: {listing}")

    def __str__(self) -> str:
        return self.args[0]


class DuplicateNameError(AutonlError):
    """A registry refuses to register the same name twice."""
