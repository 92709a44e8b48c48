"""Tensor types: a dtype and a static shape."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .errors import TypeInferenceError

DTYPES = ("f32", "f16", "bf16", "f64", "i64", "i32", "i8", "u8", "bool")


@dataclass(frozen=True)
class TensorType:
    """The type of a value: element type and static shape, printed as ``f32[1,3,224,224]``."""

    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TypeInferenceError(f"unknown dtype '{self.dtype}'; known dtypes: {', '.join(DTYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise TypeInferenceError(f"negative dimension in shape {list(self.shape)}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(obj: dict) -> "TensorType":
        return TensorType(obj["dtype"], tuple(obj["shape"]))


def f32(*shape: int) -> TensorType:
    return TensorType("f32", shape)
