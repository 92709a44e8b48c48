"""Output folders and manifests: checking and creating an output folder before any work,
and the one manifest writer (files with size and sha256, versions) that deploy folders,
run folders and ``autonl run`` share."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from autonl.ir import AutonlError, Graph
from autonl.ir.atomic import atomic_write


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in ("autonl", "torch", *packages):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_out(out: str | Path) -> Path:
    """Fail early, before any work, if the output folder cannot be created or written."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AutonlError(f"{out}: cannot create the output folder: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AutonlError(f"{out}: cannot create the output folder: {probe} is not writable")
    return out


def prepare_out(out: str | Path) -> Path:
    """The output folder, created; one line if it cannot be."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AutonlError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AutonlError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    return out


def write_manifest(out: Path, manifest: dict, files: list[str]) -> dict:
    """Add size and sha256 of each file (relative to ``out``) and write manifest.json last."""
    manifest["files"] = {name: {"bytes": (out / name).stat().st_size, "sha256": sha256(out / name)}
                         for name in files}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def io_signature(graph: Graph, batch_name: str | None = None) -> dict:
    """Inputs and outputs as {name, shape, dtype}; the batch dim as ``batch_name`` if given."""
    def row(name, t):
        shape = list(t.shape)
        if batch_name:
            shape[0] = batch_name
        return {"name": name, "shape": shape, "dtype": t.dtype}
    return {"inputs": [row(n, t) for n, t in graph.inputs.items()],
            "outputs": [row(n, graph.type_of(n)) for n in graph.outputs]}


def write_run_manifest(folder: str | Path, kind: str, inputs: dict, seed: int | None) -> dict:
    """manifest.json for a run folder (search, train, derive): what made it, its seed, the
    versions, and every file in it (recursively) with size and sha256; written last."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    manifest = {"format": "autonl-run-folder", "version": 1, "kind": kind, "inputs": inputs,
                "seeds": {"seed": seed}, "versions": versions("numpy")}
    return write_manifest(folder, manifest, files)
