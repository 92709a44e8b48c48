"""``PassManager``: run passes in order, verify after each, time them, dump the IR.

It runs on a :class:`~autonl.ir.Graph` or a :class:`~autonl.ir.Model` (graph + weights) and
copies its input once (the graph; a model's weight mapping but not its arrays), so the
caller's object is never changed. Passes that rewrite weights get the model's weights; on a
bare graph they get none, and their ``requires`` says so. Any exception inside a pass is
re-raised as ``pass 'NAME' (i of n) failed: ...``, naming the pass and its position.
A pipeline may be given by name (``"deploy"``; see :mod:`autonl.passes.pipelines`).

Instruments follow TVM's ``ir/instrument.py``: objects with ``before(pass, graph, index)``
and ``after(pass, result, index, seconds)`` hooks. Two ship here: :class:`PassTimes` and
:class:`DumpIR` (numbered files ``000_input.ir``, ``001_dce.ir``, ...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from autonl.ir import AutonlError, Graph, Model, verify
from autonl.ir.atomic import atomic_write
from autonl.ir.text_form import print_graph

from .base import Pass, PassError, PassResult
from .pipelines import get_pipeline
from .pass_registry import create_pass


class Instrument:
    def before(self, p: Pass, graph: Graph, index: int) -> None:
        pass

    def after(self, p: Pass, result: PassResult, index: int, seconds: float) -> None:
        pass


@dataclass
class PassTimes(Instrument):
    """Records ``(pass name, seconds, modified)`` for every pass run (how long each pass took;
    a model's inference latency is :mod:`autonl.backends.latency.timing`'s)."""

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
    """Run ``passes`` (names, ``name{opt=value}`` specs or instances), or the registered
    pipeline of that name, on a copy of a graph or model."""

    def __init__(self, passes: Sequence[Pass | str] | str, verify_each: bool = True,
                 instruments: Iterable[Instrument] = ()):
        if isinstance(passes, str):
            passes = get_pipeline(passes).passes
        self.passes = [create_pass(p) for p in passes]
        self.verify_each = verify_each
        self.instruments = list(instruments)

    def run(self, target: Graph | Model) -> Model:
        """Run on a model (or a bare graph) and return the resulting model."""
        return self._run(target)[0]

    def __call__(self, target: Graph | Model) -> PassResult:
        """Run on a graph or model; the result's ``weights`` are the model's (empty for a graph)."""
        model, modified = self._run(target)
        return PassResult(model.graph, modified, model.weights)

    def _run(self, target: Graph | Model) -> tuple[Model, bool]:
        model = target.copy() if isinstance(target, Model) else Model(target.copy(), {})
        graph, weights, modified = model.graph, model.weights, False
        n = len(self.passes)
        for i, p in enumerate(self.passes):
            for ins in self.instruments:
                ins.before(p, graph, i)
            start = time.perf_counter()
            try:
                result = p(graph, weights) if p.uses_weights else p(graph)
            except KeyboardInterrupt:
                raise
            except PassError as e:
                raise PassError(f"pass '{p.label}' ({i + 1} of {n}) failed: {_strip_label(str(e), p)}") from e
            except Exception as e:  # noqa: BLE001  (any failure names the pass and its position)
                detail = str(e) if isinstance(e, AutonlError) else f"{type(e).__name__}: {e}"
                raise PassError(f"pass '{p.label}' ({i + 1} of {n}) failed: {detail}") from e
            seconds = time.perf_counter() - start
            for ins in self.instruments:
                ins.after(p, result, i, seconds)
            graph = result.graph
            if result.weights is not None:
                weights = result.weights
            modified = modified or result.modified
            if self.verify_each:
                try:
                    verify(graph)
                except AutonlError as e:
                    where = f"pass '{p.label}' ({i + 1} of {n}" + (f", after '{self.passes[i - 1].label}')"
                                                                 if i else ")")
                    raise PassError(f"the graph is invalid after {where}: {e}") from e
        return Model(graph, weights), modified


def _strip_label(message: str, p: Pass) -> str:
    """``pass 'x' cannot run: why`` -> ``cannot run: why`` (the prefix names the pass already)."""
    prefix = f"pass '{p.label}' "
    return message[len(prefix):] if message.startswith(prefix) else message
