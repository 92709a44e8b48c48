"""The schema of a model folder's ``data.json`` (written by
:func:`autonl.backends.torch.data.data_facts`), and its check against the model it describes.

``data.json`` is copied into every deploy manifest and board README and tells a deployment
how to preprocess its input and name its outputs, so an edited one is refused with one line
rather than shipped: the format and version, class names (distinct, non-empty, as many as
the model has logits), three finite means and three positive standard deviations, an input
shape ``[N, 3, R, R]``, and the recorded augmentation in range. Numbers are finite and
nothing nests deeper than the reader allows (:mod:`autonl.ir.json_file`).
"""
from __future__ import annotations

from pathlib import Path

from autonl.ir import AutonlError, Graph
from autonl.ir.json_file import check_schema, read_json_file

__all__ = ["DATA_FACTS_SCHEMA", "check_facts_fit", "read_facts_file"]

MAX_FACTS_BYTES = 32 << 20    # a million class names of ~30 characters
_TEXT = {"type": "string", "minLength": 1, "maxLength": 4096}
_SHARE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}

DATA_FACTS_SCHEMA = {
    "type": "object",
    "required": ["format", "version", "data", "classes", "input", "output"],
    "properties": {
        "format": {"const": "autonl-data"},
        "version": {"const": 1},
        "data": _TEXT,
        "validation": _TEXT,
        "classes": {"type": "array", "minItems": 1, "maxItems": 1_000_000, "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 1024}},
        "input": {
            "type": "object",
            "required": ["layout", "dtype", "shape", "channel_order", "resize", "colour", "scale", "normalize",
                         "mean", "std"],
            "properties": {
                "layout": {"const": "NCHW"}, "dtype": {"const": "float32"},
                "shape": {"type": "array", "prefixItems": [{"const": "N"}, {"const": 3},
                                                           {"type": "integer", "minimum": 1, "maximum": 4096},
                                                           {"type": "integer", "minimum": 1, "maximum": 4096}],
                          "minItems": 4, "maxItems": 4},
                "channel_order": {"const": "RGB"},
                "resize": _TEXT, "colour": _TEXT, "scale": _TEXT, "normalize": _TEXT,
                "mean": {"type": "array", "minItems": 3, "maxItems": 3,
                         "items": {"type": "number", "minimum": -1e6, "maximum": 1e6}},
                "std": {"type": "array", "minItems": 3, "maxItems": 3,
                        "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6}},
            },
        },
        "output": {"type": "object", "required": ["meaning"], "properties": {"meaning": _TEXT}},
        "augmentation": {"type": "object", "properties": {
            "crop_scale": _SHARE, "flip": {"type": "boolean"},
            "eval_crop": {"anyOf": [{"type": "null"}, _SHARE]}}},
    },
}

HINT = "; the file was edited or is damaged: restore it, or delete it and give --data where a command needs it"


def read_facts_file(path: str | Path) -> dict:
    """The data description in ``path``, checked against :data:`DATA_FACTS_SCHEMA`."""
    doc = read_json_file(path, "data description", max_bytes=MAX_FACTS_BYTES, hint=HINT)
    return check_schema(doc, DATA_FACTS_SCHEMA, str(path), "data description", HINT)


def check_facts_fit(facts: dict | None, graph: Graph, path: str | Path) -> dict | None:
    """``facts`` if they describe ``graph``: as many class names as it has logits; one line
    otherwise."""
    if facts is None:
        return None
    out = graph.type_of(graph.outputs[0]).shape
    logits = out[-1] if out else None
    if logits is not None and len(facts["classes"]) != logits:
        raise AutonlError(f"{path}: names {len(facts['classes'])} classes, the model '{graph.name}' has {logits} "
                          f"logits{HINT}")
    return facts
