"""What every benchmark repeats, written once: its argument parser with the common flags,
the CPU's name (from lscpu), and its results written under ``benchmarks/results`` (or where
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
import subprocess
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
    """The CPU's model name from lscpu, its family and model, and its widest vector
    extension that int8 kernels use (AVX-512 VNNI, AVX-VNNI, AVX2); "unknown" without lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown").strip()
    extra = [f"family {fields['CPU family'].strip()} model {fields['Model'].strip()}"] if "CPU family" in fields else []
    if "avx512_vnni" in fields.get("Flags", ""):
        extra.append("AVX-512 VNNI")
    elif "avx_vnni" in fields.get("Flags", ""):
        extra.append("AVX-VNNI")
    elif "avx2" in fields.get("Flags", ""):
        extra.append("AVX2")
    return name + (f" ({', '.join(extra)})" if extra else "") + f", {os.cpu_count()} CPUs"
