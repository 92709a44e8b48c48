"""Bounded numbers: :class:`Range`, the values a numeric setting may take, and the dataclass
field helpers that attach one to a field, so that a setting's bound is written once.

A config or options dataclass gives each numeric field its range (:func:`ranged_field`, field
metadata ``"range"``) and calls :func:`check_ranges` in ``__post_init__``; the command line
builds its click types from the same ranges (``autonl.cli.options.ranged``), so a value out
of range is refused while the command line is parsed, with the same one line as here. Plain
Python: the IR imports no torch, runtime or command-line library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .errors import AutonlError


@dataclass(frozen=True)
class Range:
    """The values a numeric option may take: ``lo <= v <= hi`` (``lo < v`` with ``lo_open``,
    ``v < hi`` with ``hi_open``; ``None``: no bound); integers only, or finite numbers."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = True

    def __str__(self) -> str:
        lo, hi = self.lo, self.hi
        if self.integer:
            what = "a positive integer" if lo is not None and lo >= 1 else "an integer"
            if lo is not None and hi is not None:
                return f"{what} in {lo}..{hi}"
            if lo is not None and lo > 1:
                return f"an integer >= {lo}"
            if lo is not None and lo == 0:
                return f"{what} >= 0"
            return what if hi is None else f"{what} <= {hi}"
        if lo is not None and hi is not None:
            return f"a number in {'(' if self.lo_open else '['}{lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"a finite number {'>' if self.lo_open else '>='} {lo:g}"
        if hi is not None:
            return f"a finite number {'<' if self.hi_open else '<='} {hi:g}"
        return "a finite number"

    def holds(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def check(self, flag: str, value) -> None:
        """One line ``--flag must be ... (got v)`` unless ``value`` is in range."""
        if not self.holds(value):
            raise AutonlError(f"{flag} must be {self} (got {value!r})")


POSITIVE_INT = Range(1)                  # steps, batch sizes, sizes, intervals, runs
NON_NEGATIVE_INT = Range(0)              # warm-up steps, BN batches, trials
POSITIVE = Range(0, lo_open=True, integer=False)         # learning rates, temperatures, minutes
NON_NEGATIVE = Range(0, integer=False)                   # weights of loss terms
FRACTION = Range(0, 1, hi_open=True, integer=False)      # label smoothing


def ranged_field(default, rng: Range, flag: str | None = None, **metadata):
    """A dataclass field with its range (and its flag, where it is not ``--field-name``)."""
    return field(default=default, metadata={"range": rng, **({"flag": flag} if flag else {}), **metadata})


def flag_of(cls, name: str) -> str:
    """The command-line flag of field ``name`` of the dataclass ``cls``."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.metadata.get("flag", "--" + name.replace("_", "-"))


def range_of(cls, name: str) -> Range:
    """The range of field ``name`` of the dataclass ``cls``."""
    return next(f for f in fields(cls) if f.name == name).metadata["range"]


def check_ranges(cfg) -> None:
    """Every ranged field of ``cfg`` in its range (``None`` allowed where that is the default)."""
    for f in fields(cfg):
        rng = f.metadata.get("range")
        value = getattr(cfg, f.name)
        if rng is not None and not (value is None and f.default is None):
            rng.check(flag_of(type(cfg), f.name), value)
