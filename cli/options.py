"""Options and parsing shared by the command groups.

Every numeric option gets a click type from a :class:`~autonl.backends.torch.config.Range`
(:func:`ranged`), so a value out of range is refused while the command line is parsed, as
one line that names the option and says the range: ``--steps must be a positive integer
(got 0)``. The training and search options take theirs from the config fields
(:func:`config_type`), so the command line and ``TrainConfig``/``SearchConfig`` agree.
"""
from __future__ import annotations

import json
import math

import click

from autonl.backends.torch.config import RESOLUTION, Range, range_of
from autonl.ir import AutonlError

WIDTH = Range(0, 16, lo_open=True, integer=False)
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


DATA_HELP = "Built-in dataset (digits, longrange) or an ImageFolder root with train/ and val/."

def parse_macs(text: str) -> float:
    """'350M', '1.2G', '500K' or a plain number; finite and positive."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    t = text.strip().upper()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise AutonlError(f"'{text}' is not a MAC count; write e.g. 350M, 1.2G or 350000000") from None
    if not (math.isfinite(value) and value > 0):
        raise AutonlError(f"--target-macs must be a positive, finite MAC count (got '{text}')")
    return value


def write_json(path: str | None, data: dict) -> None:
    if path:
        from autonl.ir import atomic_write
        atomic_write(path, json.dumps(data, indent=1) + "\n")
        click.echo(f"wrote {path}")


def lock_output(out, what: str) -> None:
    """Hold ``out``'s writer lock from now until the command ends, before the slow imports
    (torch, TVM), so a second writer is refused within a second. The library takes the same
    lock again when it writes, which is a no-op inside one process."""
    from autonl.backends.locks import output_lock
    click.get_current_context().with_resource(output_lock(out, what))
