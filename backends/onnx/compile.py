"""``autonl compile --backend onnx``: a model to a folder a user can ship.

The folder holds ``model.onnx`` (fp32, BN folded), optionally ``model.int8.onnx`` (static
int8, calibrated on a dataset), ``deploy_graph.ir`` (the graph the ONNX model was emitted
from) and ``manifest.json`` (inputs, outputs, MACs, checks, files with sha256), written
last. Every file is written to a temporary name and renamed. Before anything is written,
the ONNX model is run in onnxruntime against the torch backend on the same weights; a
difference above the tolerance stops the compile.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import onnx

from autonl.ir import AutonlError
from autonl.ir import atomic_write, render

from ..locks import output_lock
from ..loading import TorchModel, deploy_model, reference_input, torch_logits
from ..manifest import check_out, io_signature, prepare_out, versions, write_manifest
from ..parity import RULE, compare, line as parity_line
from .export import BATCH, export_onnx
from .options import OnnxOptions
from .runtime import DEFAULT_INT8_SCHEME, accuracy, batches, calibration_batches, quantize_int8, run, session

INT8_MAX_DROP = 0.01     # int8 accuracy more than one point below fp32: a warning line


def parity(model: TorchModel, onnx_model: onnx.ModelProto, batch: int = 2) -> dict:
    """torch against onnxruntime on a fixed random input (fp32, same weights), by
    :mod:`autonl.backends.parity`'s rule."""
    x = reference_input(model.graph, batch=batch)
    ref = torch_logits(model, x)
    got = run(session(onnx_model), x)
    return {"against": "torch eager (fp32)", "input": f"standard normal, seed 0, batch {batch}", **compare(ref, got)}


def load_data(data: str, model: TorchModel, calib_images: int, eval_images: int | None, skip_corrupt: bool):
    from autonl.backends.torch.data import make_loaders

    resolution = model.graph.inputs[next(iter(model.graph.inputs))].shape[-1]
    train, val, classes = make_loaders(data, resolution=resolution, batch_size=32, workers=0, augment=False,
                                       train_size=calib_images, val_size=eval_images, skip_corrupt=skip_corrupt)
    return train, val, classes


# The schemes tried in turn when the int8 model loses more than INT8_MAX_DROP of accuracy:
# the default (fastest), then depthwise convs and their activation in fp32 as well, which
# on the quick start's digits networks brought int8's top-1 agreement with fp32 from 97% to
# 99.4% at some speed (AutoNL-S at 224, 1 thread: 0.92x fp32 against 0.82x; benchmarks/int8_speed.py).
INT8_FALLBACK = (DEFAULT_INT8_SCHEME, "fp32-early8-silu-dwact-logits")


def quantize_checked(model: TorchModel, onnx_model, o: OnnxOptions, calib_data: str, log) -> tuple:
    """``(int8 model, manifest entry)``: calibrated on ``calib_data``'s training images and,
    when its classes fit the model, checked on its validation split; a scheme that loses
    more than :data:`INT8_MAX_DROP` gives way to the next of :data:`INT8_FALLBACK` (the
    most accurate is kept, with a warning line, if none keeps within it)."""
    train, val, classes = load_data(calib_data, model, o.calib_images, o.eval_images, o.skip_corrupt)
    fp32 = session(onnx_model)
    calibration, dropped = calibration_batches(fp32, (x for x, _ in batches(train, o.calib_images)))
    used = sum(len(x) for x in calibration)
    if not used:
        raise AutonlError(f"int8: no calibration image of {calib_data} gives finite fp32 logits")
    log(f"int8: calibrating on {used} images of {calib_data} ({o.calib_method})"
        + (f"; left out {dropped} whose fp32 logits are not finite" if dropped else ""))
    out_classes = model.graph.type_of(model.graph.outputs[0]).shape[-1]
    names = getattr(val.dataset, "classes", None)
    recorded = (model.data or {}).get("classes")
    # the accuracy check picks the model that ships: only on data with the model's own classes
    checked = out_classes == classes and (recorded is None or names is None or list(recorded) == list(names))
    fp = accuracy(fp32, batches(val), desc="accuracy fp32") if checked else None
    within = lambda q: q is None or q["accuracy"] >= fp["accuracy"] - INT8_MAX_DROP  # noqa: E731
    tried = []      # (scheme, int8 model, its session, the nodes --int8-exclude kept fp32, its accuracy)
    for scheme in INT8_FALLBACK if checked else INT8_FALLBACK[:1]:
        int8_model, excluded = quantize_int8(onnx_model, calibration, o.calib_method, exclude=o.int8_exclude,
                                             scheme=scheme)
        int8 = session(int8_model)
        q = accuracy(int8, batches(val), desc="accuracy int8") if checked else None
        tried.append((scheme, int8_model, int8, excluded, q))
        if checked:
            log(f"int8 ({scheme}): validation accuracy {fp['accuracy']:.4f} (fp32) -> {q['accuracy']:.4f} (int8) "
                f"on {fp['images']} images")
        if within(q):
            break
    # the first within the bound, else the most accurate (ties: the earlier, faster one)
    scheme, int8_model, int8, excluded, q = tried[-1] if within(tried[-1][4]) else max(
        tried, key=lambda t: t[4]["accuracy"])
    x = reference_input(model.graph, batch=2)
    info = {"format": {p.key: p.value for p in int8_model.metadata_props}["autonl.int8.format"], "scheme": scheme,
            "calibration": {"data": calib_data, "images": used, "non_finite_left_out": dropped,
                            "method": o.calib_method},
            "fp32_nodes": excluded, "max_abs_diff_vs_fp32": float(np.abs(run(fp32, x) - run(int8, x)).max())}
    if not checked:
        info["accuracy"] = None
        info["accuracy_skipped"] = (f"the model predicts {out_classes} classes, {calib_data} has {classes}"
                                    if out_classes != classes else
                                    f"{calib_data}'s classes are not the ones the model was trained on")
        return int8_model, info
    info["accuracy"] = {"data": f"{calib_data} (validation split)", "images": fp["images"], "fp32": fp["accuracy"],
                        "int8": q["accuracy"], "change": q["accuracy"] - fp["accuracy"]}
    info["schemes_tried"] = {t[0]: t[4]["accuracy"] for t in tried}
    if len(tried) > 1:
        log(f"int8: kept {scheme} ({q['accuracy']:.4f}; tried {', '.join(t[0] for t in tried)})")
    if not within(q):
        info["warning"] = (
            f"warning: int8 loses {100 * (fp['accuracy'] - q['accuracy']):.1f} points of accuracy "
            f"({fp['accuracy']:.4f} -> {q['accuracy']:.4f}), more than {100 * INT8_MAX_DROP:.0f}; deploy the "
            f"fp32 model, or try --calib-method, more --calib-images, or --int8-exclude")
        log(info["warning"])
    return int8_model, info


def compile_onnx(model: TorchModel, out: str | Path, options: OnnxOptions = OnnxOptions(),
                 log=lambda msg: None) -> dict:
    """Compile ``model`` into ``out`` with ``options`` (checked when they were made: an opset
    below 17 is refused there); return the manifest. The lock of ``out``
    (:mod:`autonl.backends.locks`) is held from before any work to the manifest."""
    check_out(out)
    with output_lock(out, "compile"):
        return _compile_onnx(model, out, options, log)


def _compile_onnx(model: TorchModel, out: str | Path, options: OnnxOptions, log) -> dict:
    from autonl.passes import analyze_cost

    o = options
    calib_data = o.calib_data
    deployed = deploy_model(model, fold_bn=o.fold_bn)
    graph = deployed.graph
    for pattern in o.int8_exclude:
        if not any(fnmatch.fnmatchcase(n.name, pattern) for n in graph):
            raise AutonlError(f"--int8-exclude {pattern} matches no node of '{graph.name}' "
                              f"(node names look like {', '.join(list(graph.nodes)[:3])})")
    if o.int8 and calib_data is None:
        calib_data = (model.data or {}).get("data")
        if calib_data is None:
            raise AutonlError("--int8 needs images to calibrate on: give --calib-data or --data (the model records "
                              "no training data)")
    onnx_model = export_onnx(deployed, opset=o.opset)
    check = parity(model, onnx_model)
    log(parity_line("onnxruntime vs torch", check)
        + (f"; warning: {check['nonfinite_rows']} of the random inputs give non-finite logits in both"
           if check["nonfinite_rows"] else ""))
    if not check["passed"]:
        raise AutonlError(f"parity check failed: onnxruntime and torch differ by {check['max_abs_diff']:.3g} "
                          f"(> {check['allowed']:.3g} allowed: {RULE}) on '{model.graph.name}'; nothing was written")
    int8_model = int8_info = None
    if o.int8:
        int8_model, int8_info = quantize_checked(model, onnx_model, o, calib_data, log)

    out = prepare_out(out)
    files = ["model.onnx", "deploy_graph.ir"]
    atomic_write(out / "model.onnx", onnx_model.SerializeToString())
    atomic_write(out / "deploy_graph.ir", render(graph, "text"))
    if int8_model is not None:
        atomic_write(out / "model.int8.onnx", int8_model.SerializeToString())
        files.append("model.int8.onnx")
    cost = analyze_cost(model.graph)
    manifest = {
        "format": "autonl-deploy", "version": 1, "backend": "onnx", "opset": o.opset,
        "graph": model.graph.name, "source": model.source, "weights": model.weights,
        **io_signature(model.graph, BATCH),
        "macs": cost.macs, "params": cost.params, "lightnl_macs": cost.lightnl_macs,
        "batch_norm_folded": o.fold_bn, "data": model.data,
        "checks": {"onnx_checker": "full_check passed", "parity": check},
        "int8": int8_info, "versions": versions("onnx", "onnxruntime"),
    }
    return write_manifest(out, manifest, files)
