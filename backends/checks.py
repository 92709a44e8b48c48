"""What a deploy folder says about its model's data: the README lines on the input and the
classes (:func:`describe_data`, used by the TVM board folders) and the short list of class
names (:func:`shown_classes`). The checks on real images are :mod:`autonl.workflows.compile`'s."""
from __future__ import annotations

import json

__all__ = ["describe_data", "shown_classes"]


def shown_classes(classes: list[str], first: int = 20) -> str:
    """``"a, b, c"``, or the first ``first`` names and how many there are in all."""
    return ", ".join(classes[:first]) + (f", ... ({len(classes)} in all)" if len(classes) > first else "")


def describe_data(facts: dict | None) -> str:
    """Markdown lines on a model's input and classes for a README (board folders)."""
    if not facts:
        return ("## Input\n\nThe model folder recorded no data description: preprocess as the model was "
                "trained (NCHW float32).\n")
    i = facts["input"]
    shown = shown_classes(facts["classes"])
    return (f"## Input and output\n\n- data trained on: {facts['data']}\n"
            f"- input: {i['layout']} {i['dtype']}, shape {json.dumps(i['shape'])}, {i['channel_order']}\n"
            f"- preprocessing: {i['colour']}; {i['resize']}; {i['scale']}; {i['normalize']} with mean "
            f"{i['mean']} and std {i['std']}\n"
            f"- output: {facts['output']['meaning']}\n- classes (output order): {shown}\n")

