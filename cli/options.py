"""Options and parsing shared by the command groups.

Every numeric option gets a click type from a :class:`~autonl.ir.ranges.Range`
(:func:`ranged`), so a value out of range is refused while the command line is parsed, as
one line that names the option and says the range: ``--steps must be a positive integer
(got 0)``. The training and search options take theirs from the config fields
(:func:`config_type`), so the command line and ``TrainConfig``/``SearchConfig`` agree.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass

import click

from autonl.backends.base import DATA_HELP  # noqa: F401  (re-exported for the commands)
from autonl.backends.torch.config import RESOLUTION, RUNTIME_SETTINGS, check_target
from autonl.ir import AutonlError
from autonl.ir.ranges import Range, range_of
from autonl.workflows.train import Launch

WIDTH = Range(0, 16, lo_open=True, integer=False)
NPROC = Range(1, 256)
NNODES = Range(1, 4096)
NODE_RANK = Range(0, 4095)
PORT = Range(1, 65535)
BATCH = Range(1, 4096)
CLASSES = Range(1, 1_000_000)


class _OutOfRange(click.BadParameter):
    """A value that parsed but is out of range: the message already names the option."""

    def format_message(self) -> str:
        return self.message


def _flag(param) -> str:
    if param is None:
        return "value"
    opts = sorted(getattr(param, "opts", []) or [param.name], key=lambda o: (not o.startswith("--"), -len(o)))
    return opts[0]


class _Ranged:
    """Mixin over click.IntRange/FloatRange: parse as they do, then check ``self.rng``
    (integers only, finite numbers, the bounds) with the one line of :meth:`Range.check`."""

    rng: Range
    number: click.ParamType

    def convert(self, value, param, ctx):
        v = self.number.convert(value, param, ctx)
        try:
            self.rng.check(_flag(param), v)
        except AutonlError as e:
            raise _OutOfRange(str(e), ctx=ctx, param=param) from None
        return v


class _RangedInt(_Ranged, click.IntRange):
    number = click.INT

    def __init__(self, rng: Range):
        super().__init__(rng.lo, rng.hi, min_open=rng.lo_open, max_open=rng.hi_open)
        self.rng = rng


class _RangedFloat(_Ranged, click.FloatRange):
    number = click.FLOAT

    def __init__(self, rng: Range):
        super().__init__(rng.lo, rng.hi, min_open=rng.lo_open, max_open=rng.hi_open)
        self.rng = rng


def ranged(rng: Range) -> click.ParamType:
    """The click type of a numeric option whose values lie in ``rng`` (help shows the range)."""
    return _RangedInt(rng) if rng.integer else _RangedFloat(rng)


def config_type(cls, name: str) -> click.ParamType:
    """The click type of the option for field ``name`` of a config dataclass."""
    return ranged(range_of(cls, name))


def config_option(cls, *decls: str, **kwargs):
    """``click.option`` for a field of a config dataclass: the field is the name among
    ``decls`` (or the long flag's), its type comes from the field's range and its default
    from the class."""
    name = next((d for d in decls if not d.startswith("-")), None) or \
        next(d for d in decls if d.startswith("--"))[2:].replace("-", "_")
    default = getattr(cls, name)
    return click.option(*decls, type=config_type(cls, name), default=default, show_default=default is not None,
                        **kwargs)


def augmentation_options(cls):
    """``--crop-scale``, ``--flip/--no-flip``, ``--eval-crop`` for a config class with those
    fields (autonl.backends.torch.data.augmentation: None is the dataset's default)."""
    opts = [
        config_option(cls, "--crop-scale", help="Training crops keep at least this share of the image's area "
                      "(1: no crop) [default: the data's: 0.8 for a folder and fashion-mnist, 0.6 digits, 1 longrange]."),
        click.option("--flip/--no-flip", "flip", default=None,
                     help="Random horizontal flips in training [default: on, off for digits]; --no-flip when a "
                          "mirror image would change the class."),
        config_option(cls, "--eval-crop", help="Evaluation: centre crop's share of the shorter side (1: the whole "
                      "square image) [default: 1 for a folder; built-in sets resized whole]."),
    ]

    def add(f):
        for opt in reversed(opts):
            f = opt(f)
        return f
    return add


preset_options = [
    click.option("--resolution", "-r", type=ranged(RESOLUTION), help="Input height and width (presets; default 224)."),
    click.option("--width", "-w", type=ranged(WIDTH), help="Width multiplier (presets; default 1.0)."),
    click.option("--batch", type=ranged(BATCH), help="Batch size of the input (presets; default 1)."),
    click.option("--classes", type=ranged(CLASSES), help="Number of classes (presets; default 1000)."),
]


def with_preset_options(f):
    for opt in reversed(preset_options):
        f = opt(f)
    return f


class InputShape(click.ParamType):
    """``N,C,H,W``: four positive integers, each at most 4096, and at most 2**28 values in all
    (the example input is allocated whole)."""

    name = "N,C,H,W"
    DIM = Range(1, 4096)
    MAX_VALUES = 2**28

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        flag = f"{_flag(param)} {value}"
        try:
            dims = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            raise _OutOfRange(f"{flag}: expected N,C,H,W integers, e.g. 1,3,224,224", ctx=ctx, param=param) from None
        if len(dims) != 4:
            raise _OutOfRange(f"{flag}: expected 4 sizes N,C,H,W, got {len(dims)}", ctx=ctx, param=param)
        for what, d in zip("NCHW", dims):
            if not self.DIM.holds(d):
                raise _OutOfRange(f"{flag}: {what} must be {self.DIM} (got {d})", ctx=ctx, param=param)
        if math.prod(dims) > self.MAX_VALUES:
            raise _OutOfRange(f"{flag}: {math.prod(dims):,} values in the example input, more than the "
                              f"{self.MAX_VALUES:,} allowed", ctx=ctx, param=param)
        return dims


THREADS = Range(1, 1024)


def set_torch_threads(threads: int | None, here: bool = True, processes: int = 1) -> int:
    """Torch's intra-op threads at the start: ``--threads``, else ``OMP_NUM_THREADS``, else the
    usable CPUs shared by the ``processes`` this machine runs, then fitted to the free cores
    as the loop runs (:mod:`autonl.backends.cpu`). A count the user fixed goes to the
    processes this one starts (torchrun's workers) as ``OMP_NUM_THREADS``; with ``here`` it is
    set in this process. Returns the count."""
    from autonl.backends.cpu import note_choice, torch_threads
    n, why = torch_threads(threads, processes=processes)
    if why in ("--threads", "OMP_NUM_THREADS") or processes > 1:   # for the processes this one starts too
        os.environ["OMP_NUM_THREADS"] = str(n)
    note_choice(n, why)
    if here:
        import torch
        torch.set_num_threads(n)
    return n



def parse_macs(text: str) -> float:
    """'350M', '1.2G', '500K' or a plain number (whether it is a valid target:
    :func:`~autonl.backends.torch.config.check_target`)."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    t = text.strip().upper()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise AutonlError(f"'{text}' is not a MAC count; write e.g. 350M, 1.2G or 350000000") from None


def parse_ms(text: str) -> float:
    """'4.5ms', '4.5 ms' or '4.5' (milliseconds; whether it is a valid target:
    :func:`~autonl.backends.torch.config.check_target`)."""
    t = text.strip().lower().removesuffix("ms").strip()
    try:
        return float(t)
    except ValueError:
        raise AutonlError(f"'{text}' is not a latency; write milliseconds, e.g. 4.5ms") from None


@dataclass(frozen=True)
class CostTarget:
    """What a search aims at: a MAC count, or a latency (ms) predicted by a latency table
    (``search``, ``run``). Its rules are :func:`~autonl.backends.torch.config.check_target`'s,
    which ``SearchConfig`` checks too."""

    macs: float | None = None
    latency_ms: float | None = None
    table: str | None = None

    @classmethod
    def parse(cls, macs: str | None, latency: str | None, table: str | None,
              default_macs: str | None = None, resume: bool = False) -> "CostTarget":
        """From ``--target-macs``, ``--target-latency`` and ``--latency-table``: one of the
        targets (``default_macs`` when neither is given), a latency with its table. Neither
        and no default gives an empty target (a resumed search keeps its own, and may be
        given its table again with ``resume``)."""
        if macs is None and latency is None:
            macs = default_macs
        target = cls(parse_macs(macs) if macs is not None else None,
                     parse_ms(latency) if latency is not None else None, table)
        check_target(target.macs, target.latency_ms, table, required=False, resume=resume)
        if table is not None:
            from autonl.workflows.latency import read_table_file
            read_table_file(table)       # one line now for a missing or malformed table
        return target


def cost_target_options(macs_help: str, latency_help: str):
    """``--target-macs``, ``--target-latency`` and ``--latency-table``, handed to the command
    as one ``target``: the three raw values, which the command parses with
    :meth:`CostTarget.parse` once it has taken its lock and checked what comes first."""
    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, target_macs=None, target_latency=None, latency_table=None, **kwargs):
            return f(*args, target=(target_macs, target_latency, latency_table), **kwargs)
        wrapper = click.option("--latency-table", "latency_table", type=click.Path(),
                               help="A latency table of this space (autonl latency-table) for --target-latency.")(wrapper)
        wrapper = click.option("--target-latency", "target_latency", help=latency_help)(wrapper)
        return click.option("--target-macs", "target_macs", help=macs_help)(wrapper)
    return decorate


def launch_options(f):
    """``--nproc``, ``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port``,
    handed to the command as one ``launch`` (:class:`Launch`)."""
    @functools.wraps(f)
    def wrapper(*args, nproc, nnodes, node_rank, master_addr, master_port, **kwargs):
        return f(*args, launch=Launch(nproc, nnodes, node_rank, master_addr, master_port), **kwargs)
    for decl in reversed([
        click.option("--nproc", type=ranged(NPROC), default=1, show_default=True,
                     help="Processes on this machine (torchrun, DDP: gloo on CPU, nccl on GPU)."),
        click.option("--nnodes", type=ranged(NNODES), default=1, show_default=True,
                     help="Machines in the job (torchrun's --nnodes); run the same command on each."),
        click.option("--node-rank", "node_rank", type=ranged(NODE_RANK), default=0, show_default=True,
                     help="This machine's rank, 0 on the one that writes --out."),
        click.option("--master-addr", "master_addr", help="Address of the machine with --node-rank 0 (with --nnodes > 1)."),
        click.option("--master-port", "master_port", type=ranged(PORT), default=29500, show_default=True,
                     help="Port on the master for the rendezvous.")]):
        wrapper = decl(wrapper)
    return wrapper


def write_json(path: str | None, data: dict) -> None:
    if path:
        from autonl.ir import atomic_write
        atomic_write(path, json.dumps(data, indent=1) + "\n")
        click.echo(f"wrote {path}")


def lock_output(out, what: str, inputs=()) -> None:
    """Check ``out`` against the output-folder policy (never the root, home or working folder,
    nor around or inside one of the command's ``inputs``: :func:`autonl.workflows.folders.
    writer_lock`), then hold its writer lock from now until the command ends, before the slow
    imports (torch, TVM), so a second writer is refused within a second."""
    from autonl.workflows.folders import writer_lock
    click.get_current_context().with_resource(writer_lock(out, what, inputs))
    WRITING.append((what, str(out)))


WRITING: list[tuple[str, str]] = []     # (command, output folder) this process writes, for messages


def resume_hint() -> str:
    """How to continue an interrupted search or training run of this process ('' if none)."""
    from pathlib import Path

    for what, out in WRITING:
        if what in ("search", "train") and (Path(out) / "checkpoint.pt").is_file():
            return f"; continue from its last checkpoint with: autonl {what} --out {out} --resume"
        if what == "compile":     # a TVM compile that was tuning: its database keeps what was measured
            tuning = next((Path(d) for w, d in WRITING if w == "tuning-dir"), Path(out) / "tuning")
            if (tuning / "tuning_plan.json").is_file():
                return (f"; the tuning records measured so far are kept in {tuning}: run the same command with "
                        f"--resume to finish the tuning from them")
    return ""


def check_resume_settings(out, config_file: str, given: dict, config_class) -> dict:
    """A resumed run keeps the settings it started with (they are in its checkpoint): an
    option the user typed with another value is one line, never silently dropped, unless it
    only changes how the run runs (workers, device, logging and checkpoint intervals, memory
    format): those are returned, ``{field: value}``, to apply. ``given``: {flag: (field,
    value)} for the options the user typed (:func:`typed_options`). A setting the run's file
    lacks (a run started before the setting existed) is compared with ``config_class``'s
    default, which is what the resumed run gets."""
    from pathlib import Path

    overrides = {field: value for field, value in given.values() if field in RUNTIME_SETTINGS}
    path = Path(out) / config_file
    if not path.is_file():
        return overrides    # nothing to compare with: resuming reports a missing checkpoint itself
    from autonl.ir.json_file import read_json_file
    try:
        saved = read_json_file(path, "run's settings")
    except AutonlError:
        return overrides    # resuming reports an unreadable run itself
    if not isinstance(saved, dict):
        return overrides
    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    for flag, (field, value) in given.items():
        if field in RUNTIME_SETTINGS or (field not in saved and field not in defaults):
            continue
        old = saved[field] if field in saved else defaults[field]
        same = old == value or (isinstance(value, float) and isinstance(old, (int, float))
                                and not isinstance(old, bool) and math.isclose(value, old, rel_tol=1e-9))
        if not same:
            raise AutonlError(f"{flag} {value}: a resumed run keeps its own settings ({field} = {old} in {path}); "
                              f"drop {flag}, or start a new run in another --out to change it")
    return overrides


def typed_options(ctx: click.Context, fields) -> dict:
    """{flag: (field, value)} for the options among ``fields`` that the user typed."""
    out = {}
    for param in ctx.command.params:
        if param.name in fields and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
            out[_flag(param)] = (param.name, ctx.params[param.name])
    return out


def refuse_graph_options_on_resume(ctx: click.Context, names=("resolution", "width", "space", "lightnl_norm")) -> None:
    """A resumed run keeps its own graph (in its folder): options that shape a new graph are
    one line, not silently dropped."""
    typed = typed_options(ctx, set(names))
    if typed:
        flags = ", ".join(typed)
        raise AutonlError(f"{flags}: a resumed run keeps its own graph (in its --out folder); drop {flags}, or "
                          f"start a new run in another --out")



def left_default(ctx: click.Context, names=("batch_size", "steps", "warmup_steps", "lr", "resolution")) -> set:
    """The options among ``names`` that the user left at their defaults: what ``autonl train``
    and ``autonl search`` may fit to an ImageFolder (:func:`autonl.workflows.train.fit_to_folder`)."""
    from click.core import ParameterSource
    return {name for name in names if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None)}
