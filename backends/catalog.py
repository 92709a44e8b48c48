"""The backends by name, built-ins loaded: ``onnx`` and ``tvm`` (their modules import their
runtimes only when they compile or load)."""
from __future__ import annotations

from .base import BACKENDS, Backend
from .onnx import backend as _onnx  # noqa: F401  (registers "onnx")
from .tvm import backend as _tvm  # noqa: F401  (registers "tvm")


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)


def all_backends() -> dict[str, Backend]:
    return BACKENDS.as_dict()
