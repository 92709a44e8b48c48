"""Options and parsing shared by the command groups."""
from __future__ import annotations

import json

import click

from autonl.ir import AutonlError

preset_options = [
    click.option("--resolution", "-r", type=int, help="Input height and width (presets; default 224)."),
    click.option("--width", "-w", type=float, help="Width multiplier (presets; default 1.0)."),
    click.option("--batch", type=int, help="Batch size of the input (presets; default 1)."),
    click.option("--classes", type=int, help="Number of classes (presets; default 1000)."),
]


def with_preset_options(f):
    for opt in reversed(preset_options):
        f = opt(f)
    return f


DATA_HELP = "Built-in dataset (digits, longrange) or an ImageFolder root with train/ and val/."

def parse_macs(text: str) -> float:
    """'350M', '1.2G', '500K' or a plain number."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    t = text.strip().upper()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise AutonlError(f"'{text}' is not a MAC count; write e.g. 350M, 1.2G or 350000000") from None


def write_json(path: str | None, data: dict) -> None:
    if path:
        from autonl.ir import atomic_write
        atomic_write(path, json.dumps(data, indent=1) + "\n")
        click.echo(f"wrote {path}")
