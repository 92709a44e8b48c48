"""The ``Backend`` interface, its options, and the backend registry.

A backend compiles a :class:`~autonl.backends.loading.TorchModel` into an output folder and
loads what it wrote back as runnable functions (``x -> logits``) that the pipeline times.
Each declares its options once (name, default, help); the command line builds its flags
from them and refuses an option that belongs to another backend, so no option is silently
dropped. Built-in backends: ``onnx`` and ``tvm``; a new one is a package under
``backends/`` with a ``Backend`` subclass registered in :data:`BACKENDS`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from autonl.ir import AutonlError
from autonl.ir.registry import Registry

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Option:
    """One compile option: ``name`` is the keyword (``int8``), the flag is ``--int8``.

    ``type`` is ``bool`` for a flag, a Python type, or a tuple of allowed strings;
    ``multiple`` options collect repeated flags into a tuple. ``timing``: whether the option
    applies when the backend times a model (``latency_timer``: latency tables, bench); an
    option that only shapes a deploy folder (int8 and its calibration) is not offered there."""

    name: str
    default: Any
    help: str
    type: Any = str
    multiple: bool = False
    metavar: str | None = None
    timing: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Backend:
    """Subclass: set ``name``, ``doc`` and ``options``; implement :meth:`compile` and :meth:`load`."""

    name: ClassVar[str]
    doc: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def check_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """The backend's options, ``given`` over the defaults; an unknown key is an error."""
        known = {o.name for o in self.options}
        for key in given:
            if key not in known:
                raise AutonlError(f"option '{key}' does not apply to the {self.name} backend; its options: "
                                  f"{', '.join(sorted(known)) or '(none)'}")
        return {**self.defaults(), **given}

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


def median_ms(fn: Runner, x: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn(x)`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
