"""int8 quantisation's rules (issue #38): what stays fp32 whatever the scheme, and the
histogram calibrations on tensors that do not vary."""
import numpy as np
import onnx
import pytest

from autonl.backends.loading import deploy_model, load_model_or_graph, reference_input
from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import (INT8_SCHEMES, denominator_nodes, flat_tensors, logit_nodes,
                                          quantize_int8, run, session)
from autonl.ir import build_preset


@pytest.fixture(scope="module")
def l2_lightnl():
    """AutoNL-S at 32x32 with random weights whose LightNL blocks normalise q and k to unit
    length (as the search space's do), exported to ONNX, and calibration batches."""
    graph = build_preset("autonl-s", resolution=32)
    for n in graph:
        if n.op == "lightnl":
            n.attrs["norm"] = "l2"
    model = load_model_or_graph(graph, seed=1)
    rng = np.random.default_rng(0)
    calib = [rng.normal(0, 1, reference_input(model.graph, batch=8).shape).astype(np.float32) for _ in range(4)]
    return export_onnx(deploy_model(model)), calib


def test_the_lightnl_unit_length_step_stays_fp32_in_every_scheme(l2_lightnl):
    proto, calib = l2_lightnl
    keep = set(denominator_nodes(proto.graph))
    recips = [n for n in proto.graph.node if n.op_type == "Reciprocal"]
    assert recips
    by_name = {n.name: n for n in proto.graph.node}
    for r in recips:      # the chain x*x -> ReduceSum -> +eps -> Sqrt -> Reciprocal, and the Mul applying it
        base = r.name.rsplit(".", 1)[0]
        assert {r.name, base, f"{base}.sqrt", f"{base}.eps", f"{base}.sum", f"{base}.square"} <= keep
        assert by_name[f"{base}.square"].op_type == "Mul"
    assert not keep & {n.name for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")}
    for scheme in ("all", "fp32-early8-silu-logits"):
        q, _ = quantize_int8(proto, calib, scheme=scheme)
        producer = {o: n for n in q.graph.node for o in n.output}
        for n in q.graph.node:
            if n.op_type in ("Sqrt", "Reciprocal") or n.name.endswith(".eps"):
                assert all(producer[i].op_type != "DequantizeLinear" for i in n.input if i in producer), (scheme, n.name)
        x = calib[0]
        ref = run(session(proto), x)
        assert np.isfinite(run(session(q), x)).all()
        assert np.corrcoef(ref.ravel(), run(session(q), x).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_a_tensor_that_does_not_vary(method, tmp_path):
    # AutoNL-S at 32x32: its last LightNL blocks see a 1x1 map, whose one token's affinity
    # with itself is the same for every image; onnxruntime's histograms cannot bin it alone
    model = load_model_or_graph(build_preset("autonl-s", resolution=32), seed=1)
    proto = export_onnx(deploy_model(model))
    rng = np.random.default_rng(0)
    calib = [rng.normal(0, 1, reference_input(model.graph, batch=8).shape).astype(np.float32) for _ in range(3)]
    onnx.save(proto, tmp_path / "m.onnx")
    flat = flat_tensors(str(tmp_path / "m.onnx"), calib)
    assert flat and all(name.endswith(".affinity") for name in flat)
    q, _ = quantize_int8(proto, calib, method)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert np.isfinite(run(session(q), calib[0])).all()


def test_the_logits_scheme_keeps_the_classifier_fp32(l2_lightnl):
    proto, calib = l2_lightnl
    assert logit_nodes(proto.graph) == ["classifier"]
    assert INT8_SCHEMES["fp32-early8-silu-logits"].fp32_logits
    q, _ = quantize_int8(proto, calib, scheme="all-fp32-logits")
    gemm = next(n for n in q.graph.node if n.name == "classifier")
    assert gemm.op_type == "Gemm"
    weights = {i.name: i for i in q.graph.initializer}
    assert weights[gemm.input[1]].data_type == onnx.TensorProto.FLOAT


def test_an_int8_model_that_loses_too_much_gives_way_to_a_more_faithful_scheme(trained_model, tmp_path, monkeypatch):
    import autonl.backends.onnx.compile as onnx_compile
    from autonl.backends.onnx.options import OnnxOptions

    model = load_model_or_graph(str(trained_model))
    lines = []
    manifest = onnx_compile.compile_onnx(model, tmp_path / "kept", OnnxOptions(int8=True, calib_images=64),
                                         log=lines.append)
    first = manifest["int8"]
    assert first["scheme"] == onnx_compile.INT8_FALLBACK[0] or len(first["schemes_tried"]) == 2
    # no scheme can keep within a negative drop: every one is tried, the most accurate kept, with a warning
    monkeypatch.setattr(onnx_compile, "INT8_MAX_DROP", -1.0)
    manifest = onnx_compile.compile_onnx(model, tmp_path / "all", OnnxOptions(int8=True, calib_images=64),
                                         log=lines.append)
    info = manifest["int8"]
    assert list(info["schemes_tried"]) == list(onnx_compile.INT8_FALLBACK)
    best = max(info["schemes_tried"].values())
    assert info["accuracy"]["int8"] == best and info["schemes_tried"][info["scheme"]] == best
    assert info["warning"].startswith("warning: int8 loses") and info["warning"] in lines
    assert info["format"].endswith(INT8_SCHEMES[info["scheme"]].doc)
