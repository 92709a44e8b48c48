"""``autonl compile``: a SOURCE loaded with its weights and compiled (:func:`compile_source`,
its :class:`CompileResult`), with the checks on real images a random input cannot make.

The parity check of each backend feeds a standard-normal input, where logits stay small;
LightNL's product (``norm="none"``, cubic in its input) can still overflow on real images
whose activations sit further out. So when data is given (``--data``) or recorded with the
model (its folder's ``data.json``), :func:`compile_with_checks`:

1. runs the torch model over the validation images (up to ``--check-images``) and refuses,
   before any backend work, a model whose logits are not finite on any of them, unless
   ``--allow-nonfinite`` (then the count goes into the manifest and one warning line);
2. compiles with the backend (into a folder replaced whole, :mod:`autonl.backends.outputs`);
3. runs what the backend wrote (its host runners) over the same images: logits finite,
   and within the parity tolerance of torch, relative to the largest logit;
4. records both in the manifest (``checks.real_data``) with the data facts.

An aarch64 library cannot run here: step 3 is skipped with a line saying so (the host
parity check against torch still ran).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autonl.ir import AutonlError

from autonl.backends.base import Backend
from autonl.backends.manifest import write_manifest
from autonl.backends.outputs import replacing_folder
from autonl.backends.parity import allowed

from .sources import load_deployable, weights_line

__all__ = ["CHECK_IMAGES", "CompileResult", "compile_source", "compile_with_checks", "real_batches"]

CHECK_IMAGES = 500


def real_batches(model, data: str, images: int, skip_corrupt: bool = False) -> tuple[list, list[str]]:
    """``([(x float32 [N,3,R,R], labels)], class names)`` of the first ``images`` validation images."""
    from autonl.backends.onnx.runtime import batches
    from autonl.backends.torch.data import make_val_loader, recorded_eval_crop

    resolution = model.graph.inputs[next(iter(model.graph.inputs))].shape[-1]
    loader, classes = make_val_loader(data, resolution, 32, workers=0, skip_corrupt=skip_corrupt, val_size=images,
                                      eval_crop=recorded_eval_crop(model.data, data))
    return list(batches(loader, images)), classes


def _torch_check(model, xs: list, data: str, classes: list[str]) -> tuple[dict, list[np.ndarray]]:
    from autonl.backends.loading import torch_logits

    out_classes = model.graph.type_of(model.graph.outputs[0]).shape[-1]
    if out_classes != len(classes):
        raise AutonlError(f"the model predicts {out_classes} classes but '{data}' has {len(classes)}; "
                          f"give the data it was trained on (--data)")
    logits = [torch_logits(model, x) for x, _ in xs]
    bad = int(sum((~np.isfinite(lo).all(1)).sum() for lo in logits))
    n = sum(len(y) for _, y in xs)
    correct = sum(int(((lo.argmax(1) == y) & np.isfinite(lo).all(1)).sum()) for lo, (_, y) in zip(logits, xs))
    finite = [np.abs(lo[np.isfinite(lo).all(1)]) for lo in logits]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return {"data": data, "images": n, "nonfinite_images": bad, "accuracy_torch": correct / max(n, 1),
            "max_abs_logit": top}, logits


def _fixed_batch(fn, batch: int):
    """``fn`` for a library built for ``batch`` images at a time (TVM builds are static):
    any number of images, in chunks, the last one padded with zeros."""
    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            pad = batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(np.asarray(fn(np.ascontiguousarray(chunk)))[:batch - pad])
        return np.concatenate(outs)
    return run


def _compiled_check(backend: Backend, out: Path, xs: list, ref: list[np.ndarray], manifest: dict) -> dict:
    try:
        runners = backend.load(out)
    except AutonlError as e:      # e.g. an aarch64 library: it runs on its board
        return {"skipped": str(e)}
    batch = (manifest.get("inputs") or [{}])[0].get("shape", [None])[0]
    rows = {}
    for label, fn in runners.items():
        if isinstance(batch, int):
            fn = _fixed_batch(fn, batch)
        bad, diff, top = 0, 0.0, 1.0
        for (x, _), want in zip(xs, ref):
            got = np.asarray(fn(x))
            ok = np.isfinite(got).all(1) & np.isfinite(want).all(1)
            bad += int((~np.isfinite(got).all(1)).sum())
            if ok.any():
                diff = max(diff, float(np.abs(got[ok] - want[ok]).max()))
                top = max(top, float(np.abs(want[ok]).max()))
        exact = "int8" not in label      # an int8 model is checked for accuracy, not parity
        rows[label] = {"nonfinite_images": bad, "max_abs_diff_vs_torch": diff, "relative_diff": diff / top,
                       **({"passed": diff <= allowed(top) and bad == 0} if exact else {})}
    return rows


def compile_with_checks(backend: Backend, model, out: str | Path, options: dict, log, data: str | None = None,
                        check_images: int = CHECK_IMAGES, allow_nonfinite: bool = False, force: bool = False,
                        skip_corrupt: bool = False) -> dict:
    """Compile ``model`` into ``out`` with the checks on real images (module docstring);
    return the manifest. ``data``: given by the user; None: the data recorded with the model."""
    out = Path(out)
    recorded = (model.data or {}).get("data")
    if data is None and recorded is not None:
        from autonl.backends.torch.data import data_available
        if data_available(recorded):
            data = recorded
        else:
            log(f"the data the model was trained on ({recorded}) is not here: checked on random inputs only "
                f"(give --data to check on real images)")
    with replacing_folder(out, force, keep=("tuning",)):
        real, xs, ref = None, [], []
        if data is not None and check_images > 0:
            xs, classes = real_batches(model, data, check_images, skip_corrupt)
            real, ref = _torch_check(model, xs, data, classes)
            if real["nonfinite_images"]:
                what = (f"{real['nonfinite_images']} of {real['images']} validation images of {data} give "
                        f"non-finite logits in torch")
                if not allow_nonfinite:
                    raise AutonlError(f"{what}; nothing was written ({_likely_cause(model.graph)}, or pass "
                                      f"--allow-nonfinite to write it anyway)")
                log(f"warning: {what} (--allow-nonfinite: written anyway)")
            log(f"real images: {real['images']} of {data}, logits finite on "
                f"{real['images'] - real['nonfinite_images']}, accuracy {real['accuracy_torch']:.4f} (torch)")
        options = backend.options_with_data(options, data)
        manifest = backend.compile(model, out, options, log)
        if real is None:
            manifest.setdefault("checks", {})["real_data"] = {
                "skipped": "no data given or recorded" if data is None else "--check-images 0"}
        else:
            real["compiled"] = _compiled_check(backend, out, xs, ref, manifest)
            for label, row in real["compiled"].items():
                if not isinstance(row, dict):
                    log(f"real images: {label}: {row}")
                    continue
                if row.get("nonfinite_images") and not allow_nonfinite:
                    raise AutonlError(f"{label}: {row['nonfinite_images']} of {real['images']} validation images "
                                      f"give non-finite logits; nothing was written (--allow-nonfinite to keep it)")
                if row.get("passed") is False and not row.get("nonfinite_images"):
                    raise AutonlError(f"{label} differs from torch by {row['max_abs_diff_vs_torch']:.3g} "
                                      f"({row['relative_diff']:.2g} of the largest logit) on real images of {data}; "
                                      f"nothing was written")
                log(f"real images: {label} vs torch: max |diff| {row['max_abs_diff_vs_torch']:.2e}, "
                    f"non-finite {row['nonfinite_images']}")
            manifest.setdefault("checks", {})["real_data"] = real
        return write_manifest(out, manifest, list(manifest["files"]))


def _likely_cause(graph) -> str:
    """What to do about non-finite logits: a LightNL block with norm="none" (cubic in its
    input) can overflow; without one, the weights themselves are at fault."""
    if any(n.op == "lightnl" and n.attrs.get("norm", "none") == "none" for n in graph):
        return ("a LightNL block with norm=\"none\" can overflow: search or train with the default "
                "norm=\"l2\"")
    return ("the model has no LightNL block with norm=\"none\", so its weights are at fault: they diverged in "
            "training or were edited; train again or restore them")


@dataclass
class CompileResult:
    """What :func:`compile_source` wrote: the model compiled (its weights' origin) and the
    folder's manifest (its files with their sizes)."""

    source: str
    out: Path
    model: object          # autonl.backends.loading.TorchModel
    manifest: dict

    @property
    def weights_line(self) -> str:
        return weights_line(self.model, self.source)

    @property
    def files_line(self) -> str:
        """``model.onnx (1.2 MB), ...``: the files the manifest lists, with their sizes."""
        return ", ".join(f"{k} ({v['bytes'] / 1e6:.1f} MB)" for k, v in self.manifest["files"].items())


def compile_source(backend: Backend, source: str, out: str | Path, options: dict, log, seed: int = 0,
                   preset_options: tuple = (None, None, None, None), data: str | None = None,
                   check_images: int = CHECK_IMAGES, allow_nonfinite: bool = False,
                   force: bool = False) -> CompileResult:
    """``autonl compile``: ``out`` refused before anything is loaded if it exists (unless
    ``force``), then ``source`` (:func:`~.sources.load_deployable`; ``preset_options``:
    resolution, width, batch, classes) compiled with ``options`` and checked
    (:func:`compile_with_checks`)."""
    from autonl.backends.outputs import refuse_existing

    refuse_existing(out, force, keep=("tuning",))     # before loading anything
    model = load_deployable(source, *preset_options, seed=seed)
    manifest = compile_with_checks(backend, model, out, options, log, data=data, check_images=check_images,
                                   allow_nonfinite=allow_nonfinite, force=force,
                                   skip_corrupt=bool(options.get("skip_corrupt")))
    return CompileResult(source, Path(out), model, manifest)
