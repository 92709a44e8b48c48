"""The op registry: what each op takes, what type it makes, and what it costs.

An op is a subclass of :class:`OpDef` registered with :func:`register_op`. It declares
its attributes (:class:`AttrSpec`), infers its output type from input types and
attributes, and reports MACs and parameters from shapes alone. Composite ops also
know how to lower themselves to primitives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..choice import MAX_COMBINATIONS, Choice, attr_combinations
from ..errors import TypeInferenceError
from ..registry import Registry
from ..types import TensorType

if TYPE_CHECKING:  # pragma: no cover
    from ..builder import GraphBuilder

REQUIRED = object()
ATTR_TYPES = ("int", "float", "bool", "str", "ints")


@dataclass(frozen=True)
class AttrSpec:
    """An attribute's type, default (``REQUIRED`` if none), allowed values and meaning."""

    type: str
    default: Any = REQUIRED
    one_of: tuple | None = None
    doc: str = ""

    def __post_init__(self):
        if self.type not in ATTR_TYPES:
            raise ValueError(f"attribute type must be one of {ATTR_TYPES}, not {self.type!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> str | None:
        """Return a description of what is wrong with ``value``, or None if it fits."""
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "ints": lambda v: isinstance(v, list)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
        }[self.type](value)
        if not ok:
            return f"expects {self.type}, got {value!r}"
        if self.one_of is not None and value not in self.one_of:
            return f"must be one of {', '.join(map(repr, self.one_of))}, got {value!r}"
        return None


@dataclass(frozen=True)
class Cost:
    """Multiply-accumulates and trainable parameters of one node.

    ``lightnl_macs`` is the part of ``macs`` spent in LightNL matrix products, kept apart
    because it is the figure the AutoNL paper reports for the block.
    """

    macs: int = 0
    params: int = 0
    lightnl_macs: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.params + other.params,
                    self.lightnl_macs + other.lightnl_macs)


class OpDef:
    """Base class of op definitions. Subclasses set the class attributes and override
    :meth:`infer` and :meth:`cost` (and :meth:`lower` for composites)."""

    name: ClassVar[str]
    attrs: ClassVar[dict[str, AttrSpec]] = {}
    num_inputs: ClassVar[int | tuple[int, int]] = 1
    composite: ClassVar[bool] = False
    doc: ClassVar[str] = ""

    # -- helpers shared by all ops -------------------------------------------------
    @classmethod
    def full_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        """``attrs`` with every omitted attribute set to its default (required ones are not filled)."""
        out = {k: spec.default for k, spec in cls.attrs.items() if not spec.required}
        out.update(attrs)
        return out

    @classmethod
    def without_defaults(cls, attrs: dict[str, Any], keys: Sequence[str] | None = None) -> dict[str, Any]:
        """``attrs`` without the entries (of ``keys``, or any) that equal their default, so that
        the printed IR stays short; ``True`` and ``1`` count as different values."""
        def default(k: str) -> bool:
            spec = cls.attrs.get(k)
            return (spec is not None and not spec.required and (keys is None or k in keys)
                    and type(attrs[k]) is type(spec.default) and attrs[k] == spec.default)
        return {k: v for k, v in attrs.items() if not default(k)}

    @classmethod
    def arity_ok(cls, n: int) -> bool:
        lo, hi = (cls.num_inputs, cls.num_inputs) if isinstance(cls.num_inputs, int) else cls.num_inputs
        return lo <= n <= hi

    def infer_all(self, inputs: Sequence[TensorType], attrs: dict[str, Any]) -> TensorType:
        """The output type for every combination of the choices in ``attrs``; they must agree."""
        inferred = None
        for combo in attr_combinations(attrs, MAX_COMBINATIONS):
            try:
                t = self.infer(inputs, self.full_attrs(combo))
            except TypeInferenceError as e:
                picked = {k: combo[k] for k, v in attrs.items() if isinstance(v, Choice)}
                raise TypeInferenceError(f"{e} (with choices {picked})" if picked else str(e)) from None
            if inferred is not None and t != inferred:
                raise TypeInferenceError(f"choices give different output types ({inferred} and {t}); "
                                         "a choice must not change the node's output type")
            inferred = t
        return inferred

    # -- to override ---------------------------------------------------------------
    def infer(self, inputs: Sequence[TensorType], attrs: dict[str, Any]) -> TensorType:
        raise NotImplementedError

    def cost(self, inputs: Sequence[TensorType], out: TensorType, attrs: dict[str, Any]) -> Cost:
        return Cost()

    def lower(self, b: "GraphBuilder", inputs: Sequence[str], attrs: dict[str, Any]) -> str:
        """Emit primitives computing this op on ``inputs`` into ``b``; return the output value."""
        raise NotImplementedError(f"op '{self.name}' is primitive and has no lowering")


OPS: Registry[OpDef] = Registry("op")


def register_op(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator adding an op to the registry; a second op of the same name is refused."""
    OPS.register(cls.name, cls())
    return cls


def get_op(name: str) -> OpDef:
    return OPS.get(name)


def all_ops() -> dict[str, OpDef]:
    return OPS.as_dict()


def expect(cond: bool, message: str) -> None:
    """Raise a :class:`TypeInferenceError` (the verifier adds the node) unless ``cond``."""
    if not cond:
        raise TypeInferenceError(message)
