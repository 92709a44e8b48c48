"""Passes by name: built-ins, user registrations, and plugins from the entry-point group
``autonl.passes`` (each entry point names a :class:`Pass` subclass).

A plugin may not take a name that is already registered: that is an error naming both, not
a silent skip. Pass specs on the command line are ``name`` or ``name{option=value, ...}``,
the options written as attributes are in the text form.
"""
from __future__ import annotations

import inspect
import re
from importlib.metadata import entry_points
from typing import Any, Callable

from autonl.ir import AutonlError, DuplicateNameError
from autonl.ir.registry import Registry
from autonl.ir.text_form import parse_attrs

from .base import Pass

ENTRY_POINT_GROUP = "autonl.passes"
_plugins_loaded = False


def load_plugins() -> None:
    """Register the passes that installed distributions offer under ``autonl.passes``."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # noqa: BLE001  (a broken plugin: one line, not a traceback)
            raise AutonlError(f"pass plugin '{ep.name}' ({ep.value}) failed to load: {e}") from None
        if ep.name in PASSES and PASSES.find(ep.name) is not cls:
            raise DuplicateNameError(f"pass plugin '{ep.name}' ({ep.value}) shadows the pass of that name "
                                     f"registered by {PASSES.find(ep.name).__module__}; rename the plugin")
        _add(ep.name, cls)


PASSES: Registry[type[Pass]] = Registry("pass", plural="passes", on_miss=load_plugins)


def register_pass(name: str) -> Callable[[type[Pass]], type[Pass]]:
    """Class decorator: ``@register_pass("fold-bn")``. A second pass of one name is refused."""

    def deco(cls: type[Pass]) -> type[Pass]:
        _add(name, cls)
        return cls

    return deco


def _add(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise AutonlError(f"pass '{name}' must be a subclass of autonl.passes.Pass, got {cls!r}")
    PASSES.register(name, cls)
    cls.name = name


def get_pass(name: str) -> type[Pass]:
    return PASSES.get(name)


def all_passes() -> dict[str, type[Pass]]:
    load_plugins()
    return PASSES.as_dict()


def pass_options(cls: type[Pass]) -> dict[str, inspect.Parameter]:
    """The keyword options a pass class takes (the parameters of its ``__init__``)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


_SPEC_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(\{.*)?\Z", re.S)


def parse_pass_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name{key=value, ...}`` -> (name, options)."""
    m = _SPEC_NAME.match(spec)
    if m is None:
        raise AutonlError(f"<pass>: {spec!r} is not a pass spec; write name or name{{option=value, ...}}")
    return m.group(1), parse_attrs(m.group(2), "<pass>") if m.group(2) else {}


def create_pass(spec: str | Pass, **options: Any) -> Pass:
    """A pass instance from ``"name"``, ``"name{option=value, ...}"`` or an instance."""
    if isinstance(spec, Pass):
        return spec
    name, parsed = parse_pass_spec(spec)
    cls = get_pass(name)
    options = {**parsed, **options}
    known = pass_options(cls)
    for key in options:
        if key not in known:
            listing = ", ".join(known) or "(none)"
            raise AutonlError(f"pass '{name}' has no option '{key}'; its options: {listing}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise AutonlError(f"pass '{name}': bad options {options}: {e}") from None
