"""The ONNX backend: fold-bn, export from the IR, onnxruntime parity, int8, `autonl compile`."""
import json

import numpy as np
import onnx
import pytest
import torch

from autonl.backends.loading import deploy_model, ir_model, load_model_or_graph, reference_input, torch_logits
from autonl.backends.manifest import sha256
from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.ir import build_preset
from autonl.ir.ops import lightnl_order
from autonl.passes import PassError, PassManager

from helpers import assert_one_line_error, discrete_presets, module_with_params, randomized


@pytest.mark.parametrize("name", discrete_presets())
def test_fold_bn_keeps_logits(name):
    model = randomized(name, resolution=96)
    lowered = PassManager(["lower-composites"]).run(ir_model(model.graph, model.module))
    folded = PassManager(["fold-bn"]).run(lowered)
    n_bn = sum(n.op == "batch_norm" for n in lowered.graph)
    assert n_bn > 0 and sum(n.op == "batch_norm" for n in folded.graph) == 0
    assert not any(k.startswith(tuple(n.name + "." for n in lowered.graph if n.op == "batch_norm"))
                   for k in folded.weights)
    x = torch.from_numpy(reference_input(model.graph, batch=2))
    with torch.inference_mode():
        ref, got = module_with_params(lowered)(x), module_with_params(folded)(x)
    assert (ref - got).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_fold_bn_needs_weights(cli):
    graph = PassManager(["lower-composites"])(build_preset("mobilenetv2", resolution=32)).graph
    with pytest.raises(PassError, match="no bound weights"):
        PassManager(["fold-bn"])(graph)
    assert_one_line_error(cli("opt", "mobilenetv2", "-p", "lower-composites", "-p", "fold-bn"),
                          "fold-bn", "no bound weights")


@pytest.mark.parametrize("name", discrete_presets())
def test_onnxruntime_matches_torch_at_224(name):
    model = randomized(name)
    proto = export_onnx(deploy_model(model))
    assert proto.opset_import[0].version >= 17
    onnx.checker.check_model(proto, full_check=True)
    # shape inference gave every intermediate value a type
    assert len(proto.graph.value_info) >= len(proto.graph.node) - len(proto.graph.output) - 5
    sess = session(proto)
    for batch in (1, 3):   # one model, any batch: the batch dim is symbolic
        x = reference_input(model.graph, batch=batch)
        ref = torch_logits(model, x)
        assert np.abs(ref).max() > 0.05           # the random BN makes the logits non-trivial
        assert np.abs(run(sess, x) - ref).max() <= 1e-4


def test_lightnl_exports_in_its_cheaper_order():
    model = randomized("autonl-l", resolution=224)
    proto = export_onnx(deploy_model(model))
    matmuls = {n.name: n for n in proto.graph.node if n.op_type == "MatMul"}
    graph = model.graph
    blocks = [n for n in graph if n.op == "lightnl" and n.attrs.get("insert", True)]
    assert len(blocks) == 14
    for node in blocks:
        t = graph.type_of(node.inputs[0])
        order = lightnl_order(t, node.attrs.get("r", 0.25), node.attrs.get("s", 1))
        first = f"{node.name}.kv" if order == "key_value_first" else f"{node.name}.affinity"
        assert first in matmuls and f"{node.name}.y" in matmuls, node.name
        assert matmuls[f"{node.name}.y"].input[0 if order == "key_value_first" else 1] == first


def test_compile_writes_model_int8_and_manifest(cli, trained_model, tmp_path):
    out = tmp_path / "deploy"
    proc = cli("compile", trained_model, "--backend", "onnx", "--out", out, "--int8", "--calib-images", "128",
               check_ok=True)
    assert "onnxruntime vs torch" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["deploy_graph.ir", "model.int8.onnx", "model.onnx"]
    for name, info in manifest["files"].items():
        assert sha256(out / name) == info["sha256"] and (out / name).stat().st_size == info["bytes"]
    assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 3, 32, 32], "dtype": "f32"}]
    assert manifest["outputs"][0]["shape"] == ["batch", 10]
    assert manifest["macs"] > 0 and manifest["checks"]["parity"]["max_abs_diff"] <= 1e-4
    acc = manifest["int8"]["accuracy"]
    assert acc["images"] == 359 and acc["fp32"] > 0.5
    # the int8 model is real: it runs, and mostly agrees with fp32 on the validation images
    from autonl.backends.onnx.compile import load_data
    model = load_model_or_graph(trained_model)
    _, val, _ = load_data("digits", model, 128, None, False)
    fp, q = session(out / "model.onnx"), session(out / "model.int8.onnx")
    x = np.concatenate([b.numpy() for b, _ in val])
    y = np.concatenate([labels.numpy() for _, labels in val])
    assert len(y) == acc["images"]
    fp_pred, q_pred = run(fp, x).argmax(1), run(q, x).argmax(1)
    assert (fp_pred == q_pred).mean() >= 0.8
    # the reported accuracies are those of the written models' predictions
    assert acc["fp32"] == pytest.approx((fp_pred == y).mean())
    assert acc["int8"] == pytest.approx((q_pred == y).mean())
    assert acc["change"] == pytest.approx(acc["int8"] - acc["fp32"])
    # a drop of more than one point says so, in the output and the manifest
    lost = acc["change"] < -0.01
    assert ("warning: int8 loses" in proc.stderr) == lost == ("warning" in manifest["int8"])
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(out / "model.int8.onnx").graph.node)
    # fp32 nodes on request
    cli("compile", trained_model, "--out", tmp_path / "partial", "--int8", "--calib-images", "64",
        "--int8-exclude", "lightnl_*", check_ok=True)
    partial = json.loads((tmp_path / "partial" / "manifest.json").read_text())
    assert partial["int8"]["fp32_nodes"] and all(n.startswith("lightnl_") for n in partial["int8"]["fp32_nodes"])
    # bench times the deploy folder's fp32 and int8 models side by side (and a .onnx file)
    cli("bench", out, out / "model.int8.onnx", "--rounds", "2", "--threads", "1", "--json", tmp_path / "b.json",
        check_ok=True)
    rows = {r["source"]: r for r in json.loads((tmp_path / "b.json").read_text())["models"]}
    assert sorted(rows) == sorted([f"{out} (fp32)", f"{out} (int8)", str(out / "model.int8.onnx")])
    assert all(r["ms"] > 0 for r in rows.values()) and rows[f"{out} (int8)"]["model_file"] == "model.int8.onnx"
    assert_one_line_error(cli("bench", out, "--backend", "tvm"), "timed with onnxruntime")


def test_compile_bad_input(cli, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(cli("compile", "mobilenetv2", "--backend", "onx", "--out", out),
                          "unknown backend 'onx'", "did you mean 'onnx'")
    assert_one_line_error(cli("compile", "search-space", "-r", "32", "--out", out), "relaxed", "derive")
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(cli("compile", "mobilenetv2", "-r", "32", "--out", blocker / "sub"), "cannot create")
    (tmp_path / "plain").mkdir()
    assert_one_line_error(cli("compile", tmp_path / "plain", "--out", out), "not a model folder")
    assert_one_line_error(cli("compile", "mobilenetv2", "-r", "32", "--out", out, "--int8",
                              "--int8-exclude", "nothing_*"), "matches no node")
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]


def test_compile_preset_keeps_no_partial_file(cli, tmp_path):
    out = tmp_path / "ok"
    cli("compile", "autonl-s", "-r", "64", "--out", out, check_ok=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == "random init (seed 0), random BN statistics" and manifest["int8"] is None
    assert sorted(p.name for p in out.iterdir()) == ["deploy_graph.ir", "manifest.json", "model.onnx"]


# Every elementwise op whose result depends on where its input lies (clips, knees, saturation):
# the networks above keep their activations small (random weights), so a wrong bound in one
# emitter (relu6's Clip at 5 instead of 6) passed every other test. Here each runs alone on
# inputs from -12 to 12.
WIDE_RANGE_OPS = ["relu", "relu6", "sigmoid", "silu", "hardswish", "hardsigmoid"]


@pytest.mark.parametrize("op", WIDE_RANGE_OPS)
def test_each_activation_matches_torch_over_its_whole_range(op):
    from autonl.backends.onnx.export import onnx_ops
    from autonl.ir import parse_graph

    assert op in onnx_ops()
    graph = PassManager(["shape-inference"])(parse_graph(
        f"graph one(%x: f32[1,4,10,10]) {{\n  %y = {op}(%x)\n  return %y\n}}\n")).graph
    model = load_model_or_graph(graph, seed=0)
    x = np.linspace(-12, 12, 400, dtype=np.float32).reshape(1, 4, 10, 10)
    ref = torch_logits(model, x)
    assert ref.max() - ref.min() > 0.5          # the op is not flat over the range
    assert np.abs(run(session(export_onnx(deploy_model(model))), x) - ref).max() <= 1e-5
