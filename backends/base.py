"""The ``Backend`` interface, its options, and the backend registry.

A backend compiles a :class:`~autonl.backends.loading.TorchModel` into an output folder and
loads what it wrote back as runnable functions (``x -> logits``) that the pipeline times.
Each declares its options once, as a dataclass (:class:`BackendOptions`: name, default,
help and bounds); the backend takes them as that dataclass, checked in one place, and the
command line builds its flags and their bounds from the same fields and refuses an option
that belongs to another backend, so no option is silently dropped and no bound is written
twice. Built-in backends: ``onnx`` and ``tvm``; a new one is a package under
``backends/`` with a ``Backend`` subclass registered in :data:`BACKENDS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from autonl.ir import AutonlError
from autonl.ir.ranges import Range, check_ranges, flag_of
from autonl.ir.registry import Registry

# what every --data (and --calib-data) takes, said once
DATA_HELP = ("Built-in dataset (digits, also called builtin; fashion-mnist; longrange) or an ImageFolder root: "
             "ROOT/train/ with ROOT/val/ (or validation/, test/), or ROOT/<class>/ alone (20% of each class held "
             "out for validation).")

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Option:
    """One compile option, as the command line sees it: ``name`` is the keyword (``int8``),
    the flag is ``--int8``. Made from a field of the backend's options dataclass
    (:func:`option`, :func:`options_of`), never written by hand.

    ``type`` is ``bool`` for a flag, a Python type, or a tuple of allowed strings; ``range``:
    the bounds of a numeric option (the command line refuses a value outside them while it
    parses, with :meth:`Range.check`'s line); ``multiple`` options collect repeated flags into
    a tuple. ``timing``: whether the option applies when the backend times a model
    (``latency_timer``: latency tables, bench); an option that only shapes a deploy folder
    (int8 and its calibration) is not offered there."""

    name: str
    default: Any
    help: str
    type: Any = str
    multiple: bool = False
    metavar: str | None = None
    timing: bool = True
    range: Range | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def option(default, help: str, *, range: Range | None = None, choices: tuple[str, ...] | None = None,
           multiple: bool = False, metavar: str | None = None, timing: bool = True):
    """A field of a backend's options dataclass: its default, help, and its bounds
    (``range`` for a number, ``choices`` for a string), written once for the backend and its
    command-line flag."""
    return field(default=default, metadata={"help": help, "range": range, "choices": choices,
                                            "multiple": multiple, "metavar": metavar, "timing": timing})


def options_of(cls) -> tuple[Option, ...]:
    """The :class:`Option` of each field of the options dataclass ``cls``, in field order."""
    out = []
    for f in fields(cls):
        m = f.metadata
        rng, choices = m.get("range"), m.get("choices")
        kind = (tuple(choices) if choices else int if rng is not None and rng.integer else float if rng is not None
                else bool if isinstance(f.default, bool) else str)
        out.append(Option(f.name, f.default, m["help"], kind, m.get("multiple", False), m.get("metavar"),
                          m.get("timing", True), rng))
    return tuple(out)


@dataclass(frozen=True)
class BackendOptions:
    """Base of a backend's options: a frozen dataclass of :func:`option` fields, checked here
    in one place when it is made (each number in its range, each choice among its values);
    the command line checks the same bounds while it parses."""

    def __post_init__(self):
        check_ranges(self)
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise AutonlError(f"{flag_of(type(self), f.name)} must be one of {', '.join(choices)} "
                                  f"(got {value!r})")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Backend:
    """Subclass: set ``name``, ``doc`` and ``Options`` (a :class:`BackendOptions` dataclass);
    implement :meth:`compile` and :meth:`load`."""

    name: ClassVar[str]
    doc: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    options: ClassVar[tuple[Option, ...]] = ()      # made from ``Options``

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.options = options_of(cls.Options)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def check_options(self, given: dict[str, Any]):
        """The backend's options (its ``Options`` dataclass, checked), ``given`` over the
        defaults; an unknown key is an error."""
        known = {o.name for o in self.options}
        for key in given:
            if key not in known:
                raise AutonlError(f"option '{key}' does not apply to the {self.name} backend; its options: "
                                  f"{', '.join(sorted(known)) or '(none)'}")
        return self.Options(**given)

    def compile(self, model, out: str | Path, options: dict[str, Any], log: Callable[[str], None]) -> dict:
        """Compile ``model`` into folder ``out`` (checked, written atomically); return the manifest."""
        raise NotImplementedError

    def options_with_data(self, options: dict[str, Any], data: str | None) -> dict[str, Any]:
        """``options`` with what the backend takes from the compile's data (given with
        ``--data`` or recorded with the model; None: neither), e.g. int8 calibration images."""
        return options

    def run_options(self, data: str) -> dict[str, Any]:
        """The options ``autonl run`` compiles with, on dataset ``data``."""
        return {}

    def load(self, folder: str | Path) -> dict[str, Runner]:
        """What :meth:`compile` wrote in ``folder``, as labelled runnable functions."""
        raise NotImplementedError

    def latency_timer(self, model, threads: int, options: dict[str, Any], rpc: str | None = None) -> tuple:
        """``(timer, provenance)``: ``model`` (a TorchModel) compiled as :meth:`compile` would
        compile it, in memory, and a timer that runs it at batch 1 with ``threads`` threads
        (:mod:`autonl.backends.latency.timing`); ``rpc``: time it on a board's server.
        ``provenance``: runtime, version, target, threads, CPU."""
        raise AutonlError(f"the {self.name} backend cannot time models (latency tables, autonl bench)")


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: add a backend (its instance) to :data:`BACKENDS`; look backends up
    through :mod:`autonl.backends.catalog`, which loads the built-in ones."""
    BACKENDS.register(cls.name, cls())
    return cls
