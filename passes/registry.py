"""Passes by name: built-ins, user registrations, and plugins from the entry-point group
``autonl.passes`` (each entry point names a :class:`Pass` subclass)."""
from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, Callable

from autonl.ir import AutonlError, DuplicateNameError, UnknownNameError
from autonl.ir.text_form import parse_pass_spec

from .base import Pass

ENTRY_POINT_GROUP = "autonl.passes"
_PASSES: dict[str, type[Pass]] = {}
_plugins_loaded = False


def register_pass(name: str) -> Callable[[type[Pass]], type[Pass]]:
    """Class decorator: ``@register_pass("fold-bn")``. A second pass of one name is refused."""

    def deco(cls: type[Pass]) -> type[Pass]:
        _add(name, cls)
        return cls

    return deco


def _add(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise AutonlError(f"pass '{name}' must be a subclass of autonl.passes.Pass, got {cls!r}")
    if name in _PASSES and _PASSES[name] is not cls:
        raise DuplicateNameError(f"pass '{name}' is already registered (by {_PASSES[name].__module__})")
    cls.name = name
    _PASSES[name] = cls


def load_plugins() -> None:
    """Register the passes that installed distributions offer under ``autonl.passes``."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _PASSES:
            continue
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not break autonl itself
            raise AutonlError(f"pass plugin '{ep.name}' ({ep.value}) failed to load: {e}") from None
        _add(ep.name, cls)


def get_pass(name: str) -> type[Pass]:
    if name not in _PASSES:
        load_plugins()
    try:
        return _PASSES[name]
    except KeyError:
        raise UnknownNameError("pass", name, _PASSES) from None


def all_passes() -> dict[str, type[Pass]]:
    load_plugins()
    return dict(sorted(_PASSES.items()))


def pass_options(cls: type[Pass]) -> dict[str, inspect.Parameter]:
    """The keyword options a pass class takes (the parameters of its ``__init__``)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def create_pass(spec: str | Pass, **options: Any) -> Pass:
    """A pass instance from ``"name"``, ``"name{option=value, ...}"`` or an instance."""
    if isinstance(spec, Pass):
        return spec
    name, parsed = parse_pass_spec(spec) if "{" in spec else (spec, {})
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
