"""The torch.fx frontend: a user's nn.Module imported into the IR, its inverted residuals
folded into mbconv nodes (fold-mbconv), searched on like a preset, and unsupported ops."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autonl.backends.loading import randomize_bn
from autonl.ir import build_preset, load_graph
from autonl.backends.torch.importer import UnsupportedOpError, import_module
from autonl.passes import analyze_cost

from helpers import assert_one_line_error, module_with_params

NETS = Path(__file__).parent / "nets"
sys.path.insert(0, str(NETS))
from custom_function import WithCustomFunction  # noqa: E402
from torch_mobilenetv2 import MobileNetV2  # noqa: E402


def test_mobilenetv2_imports_with_the_presets_costs_17_mbconvs_and_the_same_logits():
    torch.manual_seed(0)
    net = randomize_bn(MobileNetV2()).eval()
    model = import_module(net, (1, 3, 224, 224))
    graph = model.graph
    cost, preset = analyze_cost(graph), analyze_cost(build_preset("mobilenetv2"))
    assert (cost.macs, cost.params) == (preset.macs, preset.params)
    assert round(cost.macs / 1e6, 1) == 300.8 and round(cost.params / 1e6, 2) == 3.50
    assert [n.name for n in graph if n.op == "mbconv"] == [f"mbconv_{i}" for i in range(17)]
    assert graph.node("features_0_0").op == "conv2d" and graph.node("classifier_1").op == "linear"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want, got = net(x), module_with_params(model)(x)
    assert want.abs().max() > 0.05
    assert (want - got).abs().max().item() <= 1e-5


class SEBlock(nn.Module):
    """An EfficientNet-style block: expand, depthwise, SE with `gate * x`, project, SiLU."""

    def __init__(self, c=16, hidden=64, reduce=4):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 5, 1, 2, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), nn.SiLU())
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, reduce, 1), nn.Conv2d(reduce, hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        h = self.dw(self.expand(x))
        gate = torch.sigmoid(self.se_expand(nn.functional.silu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        return x + self.project(gate * h)


def test_a_block_with_squeeze_excitation_folds_and_keeps_its_logits():
    torch.manual_seed(1)
    net = randomize_bn(nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), SEBlock(), nn.AdaptiveAvgPool2d(1), nn.Flatten())).eval()
    model = import_module(net, (1, 3, 32, 32))
    graph = model.graph
    (block,) = [n for n in graph if n.op == "mbconv"]
    assert block.attrs == {"out": 16, "e": 4, "k": 5, "se": 0.25, "act": "silu"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (net(x) - module_with_params(model)(x)).abs().max().item() <= 1e-5


def test_data_dependent_control_flow_falls_back_to_torch_export():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.bn(self.conv(x))
            if x.shape[2] > 4:          # symbolic tracing cannot branch on this
                y = torch.relu(y)
            return y.mean((2, 3))

    net = randomize_bn(Branchy()).eval()
    model = import_module(net, (1, 3, 8, 8))
    graph = model.graph
    assert [n.op for n in graph] == ["conv2d", "batch_norm", "relu", "global_avg_pool"]
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert (net(x) - module_with_params(model)(x)).abs().max().item() <= 1e-5


def test_an_unsupported_op_names_the_module_path_and_the_op():
    with pytest.raises(UnsupportedOpError) as e:
        import_module(WithCustomFunction(), (1, 3, 8, 8))
    msg = str(e.value)
    assert msg.startswith("cannot import gate") and "clamp" in msg and "supported: nn.Conv2d" in msg


def test_cli_import_no_fold_keeps_the_blocks_as_primitives(cli, tmp_path):
    """`--no-fold` was accepted and ignored: the blocks were folded anyway."""
    out = tmp_path / "flat.ir"
    proc = cli("import", "torch_mobilenetv2:small", "--input-shape", "1,3,32,32", "--out", out, "--no-fold",
               cwd=NETS, check_ok=True)
    assert "0 mbconv blocks" in proc.stdout
    graph = load_graph(out)
    assert not any(n.op == "mbconv" for n in graph) and sum(1 for n in graph if n.op == "conv2d") > 17


def test_compile_of_an_imported_graph_file_uses_the_weights_beside_it(cli, tmp_path):
    """`autonl import` writes small.ir and small.weights.pt; compiling small.ir used random
    weights without a word. Now it loads (and checks) the weights beside the file, and a
    compile with random weights says so."""
    import json

    import numpy as np
    import onnxruntime as ort

    from autonl.backends.loading import graph_file_model

    graph_file = tmp_path / "small.ir"
    cli("import", "torch_mobilenetv2:small", "--input-shape", "1,3,32,32", "--out", graph_file, cwd=NETS,
        check_ok=True)
    proc = cli("compile", graph_file, "--backend", "onnx", "--out", tmp_path / "d", check_ok=True)
    assert f"weights: {tmp_path / 'small.weights.pt'} (beside {graph_file})" in proc.stderr
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["weights"] == str(tmp_path / "small.weights.pt")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    sess = ort.InferenceSession(str(tmp_path / "d" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():        # the imported weights, loaded apart from the CLI
        want = graph_file_model(load_graph(graph_file), graph_file).module(torch.from_numpy(x)).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())

    proc = cli("compile", "autonl-s", "-r", "32", "--backend", "onnx", "--out", tmp_path / "r", check_ok=True)
    assert "no trained weights given" in proc.stderr


def test_cli_import_of_an_unsupported_module_writes_nothing(cli, tmp_path):
    out = tmp_path / "g.ir"
    assert_one_line_error(cli("import", f"{NETS / 'custom_function.py'}:build", "--input-shape", "1,3,8,8",
                              "--out", out), "cannot import gate", "clamp", "supported:")
    assert not out.exists() and not (tmp_path / "g.weights.pt").exists()
    assert_one_line_error(cli("import", "no_such_module_xyz:build", "--out", out), "No module named")
    assert_one_line_error(cli("import", "build", "--out", out), "MODULE:CALLABLE")
