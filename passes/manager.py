"""``PassManager``: run passes in order, verify after each, time them, dump the IR.

Instruments follow TVM's ``ir/instrument.py``: objects with ``before(pass, graph, index)``
and ``after(pass, result, index, seconds)`` hooks. Two ship here: :class:`Timing` and
:class:`DumpIR` (numbered files ``000_input.ir``, ``001_dce.ir``, ...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from autonl.ir import AutonlError, Graph, verify
from autonl.ir.io import atomic_write
from autonl.ir.text_form import print_graph

from .base import Pass, PassError, PassResult
from .registry import create_pass


class Instrument:
    def before(self, p: Pass, graph: Graph, index: int) -> None:
        pass

    def after(self, p: Pass, result: PassResult, index: int, seconds: float) -> None:
        pass


@dataclass
class Timing(Instrument):
    """Records ``(pass name, seconds, modified)`` for every pass run."""

    records: list[tuple[str, float, bool]] = field(default_factory=list)

    def after(self, p, result, index, seconds):
        self.records.append((p.name, seconds, result.modified))

    def table(self) -> str:
        width = max((len(n) for n, _, _ in self.records), default=4)
        rows = [f"{'pass':<{width}}  {'ms':>9}  modified"]
        rows += [f"{n:<{width}}  {s * 1e3:9.2f}  {'yes' if m else 'no'}" for n, s, m in self.records]
        return "\n".join(rows)


@dataclass
class DumpIR(Instrument):
    """Writes the text form of the input and of the graph after every pass into ``folder``."""

    folder: Path

    def before(self, p, graph, index):
        if index == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / "000_input.ir", print_graph(graph))

    def after(self, p, result, index, seconds):
        atomic_write(self.folder / f"{index + 1:03d}_{p.name.replace('-', '_')}.ir", print_graph(result.graph))


class PassManager:
    """Run ``passes`` (names, ``name{opt=value}`` specs or instances) on a copy of a graph."""

    def __init__(self, passes: Sequence[Pass | str], verify_each: bool = True,
                 instruments: Iterable[Instrument] = ()):
        self.passes = [create_pass(p) for p in passes]
        self.verify_each = verify_each
        self.instruments = list(instruments)

    def __call__(self, graph: Graph) -> PassResult:
        graph = graph.copy()
        modified = False
        for i, p in enumerate(self.passes):
            where = f"pass '{p.name}' ({i + 1} of {len(self.passes)}"
            where += f", after '{self.passes[i - 1].name}')" if i else ")"
            for ins in self.instruments:
                ins.before(p, graph, i)
            start = time.perf_counter()
            try:
                result = p(graph)
            except PassError as e:
                raise PassError(f"{where}: {e}") from e
            except AutonlError as e:
                raise PassError(f"{where} failed: {e}") from e
            seconds = time.perf_counter() - start
            for ins in self.instruments:
                ins.after(p, result, i, seconds)
            graph, modified = result.graph, modified or result.modified
            if self.verify_each:
                try:
                    verify(graph)
                except AutonlError as e:
                    raise PassError(f"the graph is invalid after {where}: {e}") from e
        return PassResult(graph, modified)
