"""``autonl eval``: a model folder (or a run folder's ``model/``) on a dataset's validation
split (:func:`evaluate_folder`, its :class:`EvalResult`); only ``val/`` is read."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from autonl.ir import AutonlError
from autonl.passes.sources import model_folder_to_read

__all__ = ["EvalResult", "evaluate_folder"]


@dataclass(frozen=True)
class EvalResult:
    """The accuracy of ``model`` on ``data``: ``metrics`` as the evaluation loop gives them
    (val_acc, val_loss, val_n and val_nonfinite when images give non-finite logits), the
    chance level, the accuracy line, and the warnings to print."""

    model: str
    data: str
    metrics: dict
    chance: float
    line: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The one JSON line ``autonl eval`` prints."""
        return json.dumps({"model": self.model, "data": self.data, **self.metrics, "chance": self.chance})


def evaluate_folder(model: str | Path, data: str | None = None, batch_size: int = 128, workers: int | None = None,
                    device: str = "auto", val_size: int | None = None, skip_corrupt: bool = False,
                    eval_crop: float | None = None) -> EvalResult:
    """Evaluate the model folder ``model`` on ``data`` (default: the data its folder records),
    with the centre crop it was trained with unless ``eval_crop``."""
    from autonl.backends.torch.data import (accuracy_line, chance_level, make_val_loader, read_data_facts,
                                            recorded_eval_crop)
    from autonl.backends.torch.data.facts import check_facts_fit
    from autonl.backends.torch.train import evaluate, pick_device
    from autonl.backends.torch.train.weights import load_model

    folder = model_folder_to_read(model)
    facts = read_data_facts(folder) if folder.is_dir() else None
    if data is None:
        if facts is None:
            raise AutonlError(f"{folder}: records no training data (no data.json); give --data")
        data = facts["data"]
    graph, module = load_model(folder)
    if facts is not None:
        check_facts_fit(facts, graph, folder / "data.json")
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    crop = eval_crop if eval_crop is not None else recorded_eval_crop(facts, data)
    val_loader, classes = make_val_loader(data, resolution, batch_size, workers, skip_corrupt, val_size, crop)
    out_classes = graph.type_of(graph.outputs[0]).shape[-1]
    if out_classes != len(classes):
        raise AutonlError(f"the model predicts {out_classes} classes but '{data}' has {len(classes)}")
    warnings = []
    if facts is not None and facts.get("classes") != classes:
        warnings.append(f"warning: the class names of {data} differ from those the model was trained on "
                        f"({', '.join(facts['classes'][:5])}...)")
    dev = pick_device(device)
    metrics = evaluate(module.to(dev), val_loader, dev)
    line, warn = accuracy_line(metrics["val_acc"], data)
    if metrics.get("val_nonfinite"):
        warnings.append(f"warning: {metrics['val_nonfinite']} of {metrics['val_n']} validation images give "
                        f"non-finite logits (inf/NaN); they count as wrong")
    if warn:
        warnings.append(warn)
    return EvalResult(str(folder), data, metrics, chance_level(data)[0], line, warnings)
