"""autonl.backends.onnx: export deployment graphs to ONNX, run them in onnxruntime,
quantise them to int8, and compile a model folder into a deployable ONNX folder.

The exports below load ``onnx`` on first use (PEP 562), so that registering the backend (which
every ``autonl`` command does, to list its name) does not import onnx and ml_dtypes: about a
second of each command's start-up on a 2-core machine."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .export import OPSET, export_onnx, onnx_op, onnx_ops

__all__ = ["OPSET", "export_onnx", "onnx_op", "onnx_ops"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import export
        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
