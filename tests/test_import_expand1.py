"""Issue #38: an inverted residual of expansion 1 that keeps its 1x1 expansion conv (FBNet-C's
first block: conv1x1(c->c)+BN+ReLU, dw+BN+ReLU, conv1x1+BN, plus the input) was folded into
an ``mbconv`` with ``e=1``, which has no expansion conv: the conv's weights did not load
(``unexpected mbconv_0.expand.weight, ...``) and its MACs and parameters went uncounted. Such
a block now stays primitives; a MobileNetV2-style block of expansion 1 (no expansion conv)
still folds. Networks: tests/nets/fbnet_style.py."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.backends.torch import importer
from autonl.backends.torch.importer import import_module
from autonl.backends.torch.lower import to_torch_with_weights
from autonl.backends.torch.lower.mac_count import count_macs
from autonl.ir import load_graph
from autonl.passes import PassManager, analyze_cost

NETS = Path(__file__).parent / "nets"
sys.path.insert(0, str(NETS))
import fbnet_style as F  # noqa: E402

RES = 32
VARIANTS = {"fbnet-c first block, residual": {}, "with SE, no residual (16 -> 24)": {"first_se": 4,
                                                                          "first_residual": False}}


def rel_diff(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def check_costs(graph, net) -> None:
    """MACs and parameters equal what the torch module counts (forward hooks; its parameters)."""
    cost = analyze_cost(graph)
    assert cost.macs == count_macs(net, torch.randn(1, 3, RES, RES))
    assert cost.params == sum(p.numel() for p in net.parameters())


def check_the_expand_conv_is_kept(graph, weights) -> None:
    conv = graph.node("stages_0_pw_0")
    assert conv.op == "conv2d" and conv.attrs == {"out": 16, "k": 1}
    assert [n.op for n in graph.users(conv.name)] == ["batch_norm"]
    assert graph.node("stages_0_dw_0").attrs == {"out": 16, "k": 3, "groups": 16}
    blocks = [n for n in graph if n.op == "mbconv"]   # the three other blocks, the MobileNetV2-style e=1 among them
    assert [(n.attrs["e"], n.attrs["k"], n.attrs.get("s", 1)) for n in blocks] == [(6, 3, 2), (1, 5, 1), (3, 5, 2)]
    assert not any(".expand." in k or ".expand_bn." in k for k in weights if k.startswith(blocks[1].name + "."))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_expansion_1_block_with_its_expand_conv_imports_with_exact_costs_and_logits(variant):
    net = F.fbnet_c_small(**VARIANTS[variant])
    model = import_module(net, (1, 3, RES, RES))
    check_the_expand_conv_is_kept(model.graph, model.weights)
    check_costs(model.graph, net)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = net(x), to_torch_with_weights(model)(x)    # loads strictly
    assert want.abs().max() > 5.0
    assert rel_diff(got, want) <= 1e-5
    onnx_out = run(session(export_onnx(PassManager("deploy").run(model))), x.numpy())
    assert rel_diff(onnx_out, want) <= 1e-4


def test_the_torch_fx_fallback_keeps_the_block_too(monkeypatch):
    def export_fails(*args):
        raise importer._ExportFailed("forced for the test")

    monkeypatch.setattr(importer, "_from_export", export_fails)
    net = F.fbnet_c_small()
    model = import_module(net, (1, 3, RES, RES))
    check_the_expand_conv_is_kept(model.graph, model.weights)
    check_costs(model.graph, net)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert rel_diff(to_torch_with_weights(model)(x), net(x)) <= 1e-5


def test_cli_import_and_onnx_compile_of_an_fbnet_c_style_model(cli, tmp_path):
    """`autonl import` failed with `the weights do not fit graph ...: unexpected
    mbconv_0.expand.weight, ...`; now it writes the model, which compiles to ONNX with the
    torch network's logits."""
    import onnxruntime as ort

    graph_file = tmp_path / "net.ir"
    proc = cli("import", f"{NETS / 'fbnet_style.py'}:fbnet_c_small", "--input-shape", f"1,3,{RES},{RES}",
               "--out", graph_file, check_ok=True)
    assert "3 mbconv blocks" in proc.stdout and (tmp_path / "net.weights.pt").is_file()
    net = F.fbnet_c_small()
    graph = load_graph(graph_file)
    check_costs(graph, net)
    assert graph.node("stages_0_pw_0").op == "conv2d"
    out = tmp_path / "onnx"
    cli("compile", graph_file, "--backend", "onnx", "--out", out, check_ok=True)
    assert json.loads((out / "manifest.json").read_text())["weights"] == str(tmp_path / "net.weights.pt")
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = net(x).numpy()
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1].numpy()})[0] for i in range(2)])
    assert np.abs(want).max() > 5.0
    assert rel_diff(got, want) <= 1e-4
