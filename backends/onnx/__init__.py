"""autonl.backends.onnx: export deployment graphs to ONNX, run them in onnxruntime,
quantise them to int8, and compile a model folder into a deployable ONNX folder."""
from .export import OPSET, export_onnx, onnx_op, onnx_ops

__all__ = ["OPSET", "export_onnx", "onnx_op", "onnx_ops"]
