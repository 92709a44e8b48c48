"""Search-space files (TOML or JSON): which attributes become choices, and the LightNL
candidates; read by the ``insert-lightnl`` and ``make-choices`` passes. ``autonl`` ships
``autonl`` (method.md section 2); any path works too. (The space of a relaxed graph, its
choices, is :class:`autonl.passes.SearchSpace`.)"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from autonl.ir import AutonlError, Choice
from autonl.ir.ops import LIGHTNL_NORMS, get_op

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_SPACES = ("autonl", "lightnl-only")
RULE_KEYS = {"op", "attr", "options", "nodes", "exclude", "only_valid"}
LIGHTNL_KEYS = {"ratios", "strides", "optional", "nodes", "exclude", "norm"}


@dataclass(frozen=True)
class ChoiceRule:
    op: str
    attr: str
    options: tuple
    nodes: str | None = None
    exclude: tuple[str, ...] = ()
    only_valid: bool = False

    def selects(self, name: str) -> bool:
        return name not in self.exclude and (self.nodes is None or re.fullmatch(self.nodes, name) is not None)


@dataclass(frozen=True)
class LightNLSpec:
    ratios: tuple[float, ...] = (0.125, 0.25)
    strides: tuple[int, ...] = (1, 2)
    optional: bool = True
    nodes: str | None = None
    exclude: tuple[str, ...] = ()
    norm: str = "l2"     # the lightnl op's norm: "l2" (bounded, benchmarks/lightnl_numerics.py) or "none" (the paper's)


@dataclass(frozen=True)
class SpaceFile:
    rules: tuple[ChoiceRule, ...] = ()
    lightnl: LightNLSpec | None = None
    source: str = "<space>"
    extra: dict = field(default_factory=dict)


def _fail(source: str, message: str) -> AutonlError:
    return AutonlError(f"{source}: {message}")


def parse_space(doc: Any, source: str) -> SpaceFile:
    if not isinstance(doc, dict):
        raise _fail(source, "a search space is a table with [[choice]] rules and an optional [lightnl]")
    unknown = set(doc) - {"choice", "lightnl"}
    if unknown:
        raise _fail(source, f"unknown section '{sorted(unknown)[0]}'; sections: choice, lightnl")
    rules = []
    for i, r in enumerate(doc.get("choice", [])):
        where = f"choice rule {i + 1}"
        if not isinstance(r, dict):
            raise _fail(source, f"{where} is not a table")
        bad = set(r) - RULE_KEYS
        if bad:
            raise _fail(source, f"{where}: unknown key '{sorted(bad)[0]}'; keys: {', '.join(sorted(RULE_KEYS))}")
        for key in ("op", "attr", "options"):
            if key not in r:
                raise _fail(source, f"{where}: missing '{key}'")
        try:
            op = get_op(r["op"])
        except AutonlError as e:
            raise _fail(source, f"{where}: {e}") from None
        spec = op.attrs.get(r["attr"])
        if spec is None:
            raise _fail(source, f"{where}: op '{op.name}' has no attribute '{r['attr']}'; "
                        f"attributes: {', '.join(op.attrs)}")
        options = r["options"]
        if not isinstance(options, list):
            raise _fail(source, f"{where}: options must be a list")
        try:
            Choice(*options)
        except AutonlError as e:
            raise _fail(source, f"{where}: {e}") from None
        for o in options:
            problem = spec.check(o)
            if problem:
                raise _fail(source, f"{where}: option of {op.name}.{r['attr']} {problem}")
        if r.get("nodes") is not None:
            try:
                re.compile(r["nodes"])
            except re.error as e:
                raise _fail(source, f"{where}: 'nodes' is not a regular expression: {e}") from None
        rules.append(ChoiceRule(op.name, r["attr"], tuple(options), r.get("nodes"), tuple(r.get("exclude", ())),
                                bool(r.get("only_valid", False))))
    lightnl = None
    if "lightnl" in doc:
        nl = doc["lightnl"]
        bad = set(nl) - LIGHTNL_KEYS if isinstance(nl, dict) else {"?"}
        if bad:
            raise _fail(source, f"[lightnl]: unknown key '{sorted(bad)[0]}'; keys: {', '.join(sorted(LIGHTNL_KEYS))}")
        lightnl = LightNLSpec(tuple(nl.get("ratios", (0.125, 0.25))), tuple(nl.get("strides", (1, 2))),
                              bool(nl.get("optional", True)), nl.get("nodes"), tuple(nl.get("exclude", ())),
                              nl.get("norm", LightNLSpec.norm))
        if lightnl.norm not in LIGHTNL_NORMS:
            raise _fail(source, f"[lightnl]: norm {lightnl.norm!r} must be one of {', '.join(map(repr, LIGHTNL_NORMS))}")
        for r in lightnl.ratios:
            if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 1:
                raise _fail(source, f"[lightnl]: ratio {r!r} must be a number in (0, 1]")
        for s in lightnl.strides:
            if not isinstance(s, int) or isinstance(s, bool) or s < 1:
                raise _fail(source, f"[lightnl]: stride {s!r} must be a positive integer")
    return SpaceFile(tuple(rules), lightnl, source)


def load_space(space: str | Path) -> SpaceFile:
    """A built-in space by name (``autonl``) or a ``.toml``/``.json`` file."""
    if str(space) in BUILTIN_SPACES:
        text = resources.files("autonl.ir").joinpath(f"spaces/{space}.toml").read_text()
        return parse_space(tomllib.loads(text), f"built-in space '{space}'")
    path = Path(space)
    if not path.is_file():
        raise AutonlError(f"{path}: no such search-space file (built-in spaces: {', '.join(BUILTIN_SPACES)})")
    try:
        text = path.read_text()
        doc = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise AutonlError(f"{path}:{e.lineno}:{e.colno}: {e.msg}") from None
    except tomllib.TOMLDecodeError as e:
        raise AutonlError(f"{path}: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise AutonlError(f"{path}: not a text file") from None
    return parse_space(doc, str(path))
