"""What every benchmark repeats, written once: its argument parser with the common flags,
the CPU's name (autonl's reader), and its results written under ``benchmarks/results`` (or where
``--out``/``--json`` says), each file atomically (a temporary name, then a rename), so an
interrupted benchmark never leaves half a results file.

Timing a model's inference goes through :mod:`autonl.backends.latency.timing` (``measure_all``
for the careful measurement, ``median_of_calls``/``interleaved_rounds`` for plain rounds, a
training step's too); a one-off elapsed time (a whole job, a pass over a data set) is a
:class:`Stopwatch`.

    import harness                      # benchmarks/ is on sys.path when a benchmark runs
    ap = harness.parser(__doc__, threads=2)
    harness.add_out(ap, "int8_speed")
    args = ap.parse_args()
    harness.write_results(args.out, result, text)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str | None, *, threads: int | None = None, first: str = "\n\n", threads_help: str | None = None,
           **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph (``first="\\n"``: line) of ``doc``;
    ``threads``: add ``--threads`` with that default (0: the machine's CPUs), described by
    ``threads_help`` (default: the runtimes' threads). ``kwargs`` go to the ArgumentParser
    (``formatter_class``)."""
    ap = argparse.ArgumentParser(description=(doc or "").split(first)[0], **kwargs)
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads or os.cpu_count(),
                        help=threads_help or "CPU threads of the runtimes timed [default: %(default)s]")
    return ap


def add_out(ap: argparse.ArgumentParser, name: str) -> None:
    """``--out``/``--json`` PREFIX (OUT.json and OUT.txt; a trailing .json is dropped),
    default ``benchmarks/results/NAME``, and ``--no-save``."""
    ap.add_argument("--out", "--json", dest="out", default=str(RESULTS / name),
                    help="writes OUT.json and OUT.txt (a trailing .json is dropped)")
    ap.add_argument("--no-save", action="store_true", help="print only, write no results files")


def results_prefix(out: str | Path) -> Path:
    return Path(re.sub(r"\.json$", "", str(out)))


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write ``path`` whole or not at all (folders made as needed)."""
    from autonl.ir import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path


def write_results(prefix: str | Path, data: dict | None = None, text: str | None = None) -> list[Path]:
    """``PREFIX.json`` (``data``, indented) and ``PREFIX.txt`` (``text``), each atomically;
    returns the paths written."""
    prefix = results_prefix(prefix)
    written = []
    if data is not None:
        written.append(write_atomic(f"{prefix}.json", json.dumps(data, indent=1) + "\n"))
    if text is not None:
        written.append(write_atomic(f"{prefix}.txt", text))
    return written


def write_json(path: str | Path, data: dict | list) -> Path:
    """One JSON file, atomically (indented by 1, as the benchmarks write them, and ending in a
    newline, as :func:`write_results` writes its JSON)."""
    return write_atomic(path, json.dumps(data, indent=1) + "\n")


class Stopwatch:
    """Seconds since it was made (``time.perf_counter``): the elapsed wall time of a one-off
    job (a compile, a training, a pass over a data set), not a latency (that is
    :mod:`autonl.backends.latency.timing`'s).

        watch = harness.Stopwatch()
        run_the_job()
        print(f"{watch.seconds:.0f} s")
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def cpu_model() -> str:
    """The machine as results files name it: ``AMD EPYC (family 25 model 1, AVX2), 2 CPUs``
    (autonl's one reader of the CPU, :func:`autonl.backends.manifest.cpu_description`)."""
    from autonl.backends.manifest import cpu_description
    return cpu_description()
