"""Backends that turn IR graphs into runnable models (torch, ONNX, TVM)."""
