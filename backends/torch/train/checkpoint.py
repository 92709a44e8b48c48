"""The one checkpoint format of train and search runs: its writer, its reader and its restorer.

A checkpoint is a dict written with ``torch.save`` (to a temporary name, then renamed) that
``torch.load(weights_only=True)`` reads back: ``format`` (:data:`CHECKPOINT_FORMAT`),
``version``, ``kind`` (``train`` or ``search``; missing means ``train``), ``step``, one state
dict per part of the run (``model``, then the kind's optimisers and schedulers), ``rng``
(the torch, Python and CUDA generator states), ``config`` (the run's settings) and the
kind's extras (a search adds its ``decisions``).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from autonl.ir import AutonlError, atomic_write

from .weights import check_state_dict, read_torch_file, torch_bytes

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "read_checkpoint", "restore_checkpoint", "rng_state",
           "set_rng_state", "write_checkpoint"]

CHECKPOINT_FORMAT = "autonl-checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(path: Path, kind: str, step: int, parts: dict, config: dict, extra: dict | None = None) -> None:
    """Save the state dicts of ``parts`` (name -> module, optimiser or scheduler), the RNG
    states as they are now, ``config`` and ``extra`` as the ``kind`` checkpoint of ``step``."""
    atomic_write(path, torch_bytes({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind, "step": step,
        **{name: part.state_dict() for name, part in parts.items()},
        "rng": rng_state(), "config": config, **(extra or {})}))


def read_checkpoint(path: Path) -> dict:
    ckpt = read_torch_file(path, "checkpoint")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AutonlError(f"{path}: not an autonl checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise AutonlError(f"{path}: checkpoint version {ckpt.get('version')} is not supported")
    return ckpt


def restore_checkpoint(ckpt: dict, parts: dict, source: str, graph_name: str) -> int:
    """Load ``ckpt`` into ``parts`` (its ``model`` checked against the graph first) and into
    the RNGs; return its step."""
    check_state_dict(ckpt["model"], parts["model"], source, graph_name)
    for name, part in parts.items():
        part.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return ckpt["step"]
