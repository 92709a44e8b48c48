"""Output folders and manifests: checking and creating an output folder before any work,
the one manifest writer (files with size and sha256, versions) that deploy folders, run
folders and ``autonl run`` share, and the one check of a folder's files against its
manifest, made before anything in a deploy folder is loaded or run (:func:`verified`,
:func:`verified_bytes`, :func:`verify_folder`)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

from autonl.ir import AutonlError, Graph
from autonl.ir.atomic import atomic_write
from autonl.ir.json_file import check_schema, open_regular, read_json_file


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


def cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (``model name``, ``cpu family``,
    ``model``, ``flags``...); {} where it cannot be read. The one reader of the CPU's facts:
    :func:`cpu_name` (latency tables, manifests) and :func:`cpu_description` (benchmarks)."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        if not line.strip() and fields:
            break                       # the end of the first processor's block
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """This machine's CPU model (/proc/cpuinfo), else the platform's processor string."""
    return cpu_fields().get("model name") or platform.processor() or platform.machine()


def cpu_description() -> str:
    """The CPU's model name, its family and model, its widest vector extension that int8
    kernels use (AVX-512 VNNI, AVX-VNNI, AVX2) and the CPU count, as benchmark results name
    the machine: ``Intel(R) Xeon(R) Processor (family 6 model 207, AVX-512 VNNI), 2 CPUs``."""
    fields = cpu_fields()
    extra = [f"family {fields['cpu family']} model {fields.get('model', '?')}"] if "cpu family" in fields else []
    flags = fields.get("flags", "").split()
    for flag, what in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")):
        if flag in flags:
            extra.append(what)
            break
    return cpu_name() + (f" ({', '.join(extra)})" if extra else "") + f", {os.cpu_count()} CPUs"


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
    atomic_write(out / "manifest.json", json.dumps(_finite(manifest), indent=1, allow_nan=False) + "\n")
    return manifest


def _finite(value):
    """``value`` with every float that is not finite (a figure of a model whose logits
    overflowed, say) written as the string ``"nan"``, ``"inf"`` or ``"-inf"``: JSON has no such
    numbers, and the reader (:func:`read_manifest`) refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


CHANGED = "the folder was changed after autonl compile wrote it"
_HEX = frozenset("0123456789abcdef")


MAX_MANIFEST_BYTES = 64 << 20
_FILE_NAME = {"type": "string", "minLength": 1, "maxLength": 4096,
              "pattern": "^(?!/)(?!.*(^|/)[.][.](/|$))"}     # relative, never climbing out of the folder
_SHAPE = {"type": "array", "minItems": 1, "maxItems": 8,
          "items": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1 << 31}, {"type": "string"}]}}
_SIGNATURE = {"type": "array", "minItems": 1, "maxItems": 64,
              "items": {"type": "object", "required": ["name", "shape"],
                        "properties": {"name": {"type": "string"}, "shape": _SHAPE, "dtype": {"type": "string"}}}}


def _manifest_schema() -> dict:
    """What a reader of a manifest relies on: every file with its size and sha256; a deploy
    folder's input and output signature, its library's entry points (only the names autonl
    compile writes) and its data description (:mod:`.torch.data.facts`)."""
    from .torch.data.facts import DATA_FACTS_SCHEMA
    return {
        "type": "object", "required": ["files"],
        "properties": {
            "format": {"enum": ["autonl-deploy", "autonl-run-folder", "autonl-run"]},
            "version": {"const": 1},
            "files": {"type": "object", "maxProperties": 100_000, "propertyNames": _FILE_NAME,
                      "additionalProperties": {
                          "type": "object", "required": ["bytes", "sha256"],
                          "properties": {"bytes": {"type": "integer", "minimum": 0, "maximum": 1 << 44},
                                         "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}},
        },
        "allOf": [
            {"if": {"properties": {"format": {"const": "autonl-deploy"}}, "required": ["format"]},
             "then": {"properties": {
                 "inputs": _SIGNATURE, "outputs": _SIGNATURE,
                 "library": {"type": ["string", "null"]},
                 "entry": {"type": "object", "properties": {
                     "transform_params": {"enum": [None, "main_transform_params"]},
                     "main": {"const": "main"}}},
                 "data": {"anyOf": [{"type": "null"}, DATA_FACTS_SCHEMA]}}}},
            # a TVM library is built for one input shape: every dimension a number
            {"if": {"properties": {"backend": {"const": "tvm"}}, "required": ["backend"]},
             "then": {"properties": {"inputs": {"items": {"properties": {
                 "shape": {"items": {"type": "integer"}}}}}}}},
        ],
    }


def read_manifest(folder: str | Path) -> dict:
    """``folder/manifest.json`` with its ``files`` table; one line if it is missing, unreadable,
    over 64 MiB, or does not match the schema (:func:`_manifest_schema`: finite numbers,
    sizes in range, digests of 64 hex digits, no repeated key, bounded nesting)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise AutonlError(f"{folder}: no manifest.json, so its files cannot be checked before they are loaded; "
                          f"make the folder with autonl compile")
    manifest = read_json_file(path, "manifest", max_bytes=MAX_MANIFEST_BYTES, hint=f"; {CHANGED}")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise AutonlError(f"{path}: has no 'files' table (size and sha256 of each file); {CHANGED}")
    return check_schema(manifest, _manifest_schema(), str(path), "manifest", f"; {CHANGED}")


def _entry(folder: Path, name: str, manifest: dict) -> tuple[int, str]:
    files = manifest.get("files")
    info = files.get(name) if isinstance(files, dict) else None
    if info is None:
        raise AutonlError(f"{folder / name}: not listed in {folder / 'manifest.json'}, so it cannot be checked "
                          f"before it is loaded; {CHANGED}")
    size, digest = (info.get("bytes"), info.get("sha256")) if isinstance(info, dict) else (None, None)
    if not isinstance(size, int) or not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
        raise AutonlError(f"{folder / 'manifest.json'}: the entry for {name} has no valid bytes and sha256; {CHANGED}")
    return size, digest


def _locate(folder, name: str, manifest: dict | None) -> tuple[Path, Path, tuple[int, str]]:
    """(folder, its file ``name``, (bytes, sha256) from the manifest); one line if the
    manifest does not list the file or the file is missing."""
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    want = _entry(folder, name, manifest)
    path = folder / name
    if not path.is_file():
        raise AutonlError(f"{path}: missing (manifest.json lists it); {CHANGED}")
    return folder, path, want


def _compare(folder: Path, name: str, want: tuple[int, str], size: int, digest) -> None:
    """Size first (no hashing needed), then ``digest()``, the file's sha256."""
    if size != want[0]:
        raise AutonlError(f"{folder / name}: {size} bytes, manifest.json says {want[0]}; {CHANGED}")
    got = digest()
    if got != want[1]:
        raise AutonlError(f"{folder / name}: sha256 does not match manifest.json (expected {want[1][:12]}..., "
                          f"got {got[:12]}...); {CHANGED}")


def verified(folder: str | Path, name: str, manifest: dict | None = None) -> Path:
    """``folder/name``, after checking its size and sha256 against the folder's manifest.json
    (``manifest`` if already read). A file that is missing, not listed, or differs: one line.

    The check guards against a corrupt, truncated or edited copy; the manifest sits in the
    same folder, so it is not a signature against someone who can rewrite both. Between this
    check and a later read the file could change again: where a file is read into memory
    anyway, use :func:`verified_bytes`, which checks the very bytes it returns."""
    folder, path, want = _locate(folder, name, manifest)
    _compare(folder, name, want, path.stat().st_size, lambda: sha256(path))
    return path


def verified_bytes(folder: str | Path, name: str, manifest: dict | None = None) -> bytes:
    """The contents of ``folder/name``, read once and checked against the manifest: a regular
    file, whose size (from its metadata) is compared before a byte is read, so that a large
    or sparse file the manifest does not promise is refused without reading it."""
    folder, path, want = _locate(folder, name, manifest)
    try:
        with open_regular(path, "file of a deploy folder") as f:
            size = os.fstat(f.fileno()).st_size
            if size != want[0]:
                raise AutonlError(f"{folder / name}: {size} bytes, manifest.json says {want[0]}; {CHANGED}")
            data = f.read(want[0] + 1)
    except OSError as e:
        raise AutonlError(f"{path}: cannot read ({e.strerror or e})") from None
    _compare(folder, name, want, len(data), lambda: hashlib.sha256(data).hexdigest())
    return data


def verify_folder(folder: str | Path, names, manifest: dict | None = None) -> dict:
    """Check each of ``names`` (relative to ``folder``) against the manifest; return the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    for name in names:
        verified(folder, name, manifest)
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
