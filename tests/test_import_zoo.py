"""Importing models written as the model zoos write them (tests/nets/zoo_styles.py): fused
norm+act modules calling F.batch_norm, activations picked by getattr, hard swish and hard
sigmoid (as modules and hand-written), SE with each gate, drop path, padding modules and TF
"same" padding; MobileNetV3-Large and EfficientNet-B0 layouts, imported, searched, derived and
compiled end to end; ops no IR primitive covers, and several outputs, refused."""
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autonl.backends.loading import randomize_bn
from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.backends.torch.importer import UnsupportedOpError, import_module
from autonl.backends.torch.lower import to_torch_with_weights
from autonl.backends.torch.lower.mac_count import count_macs
from autonl.backends.torch.search.supernet import Supernet
from autonl.ir import AutonlError, Model, load_graph
from autonl.passes import PassManager, analyze_cost

from helpers import assert_one_line_error, assert_supernet_equals_derived

NETS = Path(__file__).parent / "nets"
sys.path.insert(0, str(NETS))
import unsupported as U  # noqa: E402
import zoo_styles as Z  # noqa: E402

RES = 32


def hook_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Conv and linear MACs per image from forward hooks (``count_macs``: every nn.Conv2d,
    subclasses included, e.g. a Conv2dSame that pads in forward, and nn.Linear), independent
    of the IR's cost model."""
    return count_macs(module, x) // x.shape[0]


def small_net(**block):
    """A stem, three inverted residuals in one style and a classifier."""
    act = block.pop("act", "relu")
    pad = block.get("padding", "pytorch")
    return nn.Sequential(Z.create_conv2d(3, 16, 3, 2, padding=pad), Z.BatchNormAct2d(16, act=act),
                         Z.InvertedResidual(16, 16, 3, 1, 48, act, **block),
                         Z.InvertedResidual(16, 24, 5, 2, 96, act, **block),
                         Z.InvertedResidual(24, 24, 3, 1, 72, act, **block),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


STYLES = {   # style -> (network, how many mbconv blocks it folds into)
    "fused norm+act, getattr activation, F.batch_norm": (lambda: small_net(act="relu6"), 3),
    "hardswish module, SE relu + nn.Hardsigmoid": (
        lambda: small_net(act="hard_swish", se_reduce=8, se_act="relu", se_gate="hard_sigmoid"), 3),
    "hand-written hard swish and hard-sigmoid gate": (
        lambda: small_net(act="hard_swish_manual", se_reduce=8, se_act="relu", se_gate="hard_sigmoid_manual"), 3),
    "swish as x * sigmoid(x), SE sigmoid gate": (
        lambda: small_net(act="swish_manual", se_reduce=4, se_act="swish", se_gate="sigmoid"), 3),
    "drop path and a padding module": (lambda: small_net(act="swish", padding="module", drop_path=0.2), 3),
    "TF same padding (asymmetric at stride 2)": (lambda: small_net(act="swish", padding="same", se_reduce=4), 3),
    "MobileNetV3-Large layout": (lambda: Z.MobileNetV3Large(width=0.35, num_classes=10), 15),
    "EfficientNet-B0 layout, TF padding": (lambda: Z.EfficientNetB0(width=0.25, num_classes=10, padding="same"), 16),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_a_zoo_style_model_imports_folds_and_keeps_cost_and_logits(style):
    build, blocks = STYLES[style]
    torch.manual_seed(0)
    net = randomize_bn(build()).eval()
    model = import_module(net, (1, 3, RES, RES))
    graph = model.graph
    assert sum(n.op == "mbconv" for n in graph) == blocks
    cost = analyze_cost(graph)
    x = torch.randn(2, 3, RES, RES)
    assert cost.macs == hook_macs(net, x[:1])
    assert cost.params == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        want, got = net(x), to_torch_with_weights(model)(x)
    assert want.abs().max() > 1e-3
    assert (want - got).abs().max().item() <= 1e-5 * want.abs().max().item()
    sess = session(export_onnx(PassManager("deploy").run(model)))
    onnx_out = run(sess, x.numpy())
    assert np.abs(onnx_out - want.numpy()).max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_tf_padding_compiles_with_tvm_and_matches_torch(tmp_path):
    """Asymmetric convolution padding (TF "same" at stride 2) through ONNX into a real TVM build."""
    from autonl.backends.loading import TorchModel
    from autonl.backends.tvm.compile import compile_tvm

    torch.manual_seed(0)
    model = import_module(randomize_bn(small_net(act="swish", padding="same", se_reduce=4)).eval(), (1, 3, RES, RES))
    assert any(n.attrs.get("pad") == "same" for n in model.graph if n.op == "mbconv")
    tm = TorchModel(model.graph, to_torch_with_weights(model), None, "imported")
    checks = compile_tvm(tm, tmp_path / "tvm", progress=False)["checks"]
    assert checks["vs_torch_max_abs_diff"] <= 1e-5 and checks["nonfinite_rows"] == 0


def test_the_published_layouts_cost_what_the_papers_report():
    """MobileNetV3-Large: 216.6M MACs, 5.48M parameters; EfficientNet-B0: 385.8M, 5.29M (conv
    and linear MACs at 224); TF padding changes neither."""
    v3 = import_module(Z.MobileNetV3Large().eval(), (1, 3, 224, 224)).graph
    b0 = import_module(Z.EfficientNetB0(padding="same").eval(), (1, 3, 224, 224)).graph
    c3, c0 = analyze_cost(v3), analyze_cost(b0)
    assert (c3.macs, c3.params) == (216_589_760, 5_483_032)
    assert (c0.macs, c0.params) == (385_814_752, 5_288_548)
    assert sum(n.op == "mbconv" for n in v3) == 15 and sum(n.op == "mbconv" for n in b0) == 16
    se = [n for n in v3 if n.op == "mbconv" and n.attrs.get("se")]
    assert len(se) == 8 and all(n.attrs["se_act"] == "relu" and n.attrs["se_gate"] == "hardsigmoid" for n in se
                                if n.attrs["act"] == "hardswish")
    assert sum(n.attrs.get("pad") == "same" for n in b0 if n.op == "mbconv") == 4   # the stride-2 blocks


@pytest.mark.parametrize("build", [lambda: Z.MobileNetV3Large(width=0.25, num_classes=10),
                                   lambda: Z.EfficientNetB0(width=0.25, num_classes=10, padding="same")],
                         ids=["mobilenetv3", "efficientnet-tf-padding"])
def test_the_supernet_of_an_imported_model_equals_its_derived_networks(build):
    """Hard swish, SE gates and TF padding in the supernet: with its gates forced, the supernet
    computes what the derived network does, for random decisions (kernels included)."""
    torch.manual_seed(0)
    graph = import_module(build().eval(), (1, 3, RES, RES)).graph
    space = PassManager("search-space").run(Model(graph, {})).graph
    supernet = randomize_bn(Supernet(space)).eval()
    assert_supernet_equals_derived(space, supernet, 6, random.Random(0), torch.randn(2, 3, RES, RES), rel_tol=1e-4,
                                   abs_tol=1e-4)


@pytest.mark.parametrize("builder", ["mobilenetv3_small_digits", "efficientnet_small_digits"])
def test_cli_import_search_derive_and_compile_a_zoo_model(cli, tmp_path, builder):
    graph_file = tmp_path / "net.ir"
    proc = cli("import", f"zoo_styles:{builder}", "--input-shape", f"1,3,{RES},{RES}", "--out", graph_file,
               cwd=NETS, check_ok=True)
    assert "mbconv blocks" in proc.stdout and (tmp_path / "net.weights.pt").is_file()
    space = PassManager(["insert-lightnl", "make-choices"])(load_graph(graph_file)).graph
    assert space.relaxed and sum(n.op == "lightnl" for n in space) > 0
    report = analyze_cost(space)
    lo, hi = report.macs, report.total("macs_max")
    run_dir = tmp_path / "search"
    cli("search", graph_file, "--target-macs", str((lo + hi) // 2), "--steps", "4", "--warmup-steps", "1",
        "--batch-size", "16", "--train-size", "64", "--val-size", "32", "--out", run_dir, check_ok=True)
    derived = tmp_path / "derived"
    cli("derive", run_dir, "--out", derived, check_ok=True)
    assert not load_graph(derived / "graph.json").relaxed
    for backend in ("onnx", "tvm"):   # each checks itself against torch (1e-4) before writing anything
        out = tmp_path / backend
        cli("compile", derived, "--backend", backend, "--out", out, check_ok=True)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["backend"] == backend and manifest["checks"]


def test_unsupported_ops_are_one_line_naming_the_module_and_the_aten_op(cli, tmp_path):
    with pytest.raises(UnsupportedOpError, match=r"cannot import mixer .*aten\.convolution\.default.*1-D"):
        import_module(U.WithConv1d(), (1, 3, 8, 8))
    with pytest.raises(UnsupportedOpError, match=r"cannot import warp .*aten\.grid_sampler_2d"):
        import_module(U.WithGridSample(), (1, 3, 8, 8))
    out = tmp_path / "g.ir"
    assert_one_line_error(cli("import", f"{NETS / 'unsupported.py'}:with_conv1d", "--input-shape", "1,3,8,8",
                              "--out", out), "cannot import mixer", "aten.convolution.default", "1-D")
    assert_one_line_error(cli("import", f"{NETS / 'unsupported.py'}:with_grid_sample", "--input-shape", "1,3,8,8",
                              "--out", out), "cannot import warp", "aten.grid_sampler_2d")
    assert_one_line_error(cli("import", f"{NETS / 'unsupported.py'}:two_outputs", "--input-shape", "1,3,8,8",
                              "--out", out), "returns 2 tensors", "one output")
    assert not out.exists() and not (tmp_path / "g.weights.pt").exists()


def test_several_outputs_are_refused_on_the_fx_fallback_too():
    """The export path refuses them (above); the torch.fx fallback, called directly, too."""
    from autonl.backends.torch.importer.fx import _from_fx

    with pytest.raises(AutonlError, match="returns several tensors"):
        _from_fx(U.TwoOutputs().eval(), torch.randn(1, 3, 8, 8), "two")


def test_padding_the_ir_cannot_express_is_refused_not_changed():
    """Reflection padding, and zero padding read by something other than a convolution."""
    reflect = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3))
    with pytest.raises(UnsupportedOpError, match=r"cannot import 0 .*reflection_pad2d"):
        import_module(reflect, (1, 3, 8, 8))
    pooled = nn.Sequential(nn.ZeroPad2d(1), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(UnsupportedOpError, match="zero padding is imported only where a convolution reads it"):
        import_module(pooled, (1, 3, 8, 8))


def test_imported_weights_load_strictly():
    """A missing, unexpected or misshapen tensor is one line naming it (the loader used
    strict=False, and a size mismatch was a traceback)."""
    model = import_module(small_net(), (1, 3, RES, RES))
    key = next(iter(model.weights))
    with pytest.raises(AutonlError, match=f"missing {key}"):
        to_torch_with_weights(Model(model.graph, {k: v for k, v in model.weights.items() if k != key}))
    with pytest.raises(AutonlError, match="unexpected extra.weight"):
        to_torch_with_weights(Model(model.graph, {**model.weights, "extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(AutonlError, match=f"{key} is float32\\[2\\]"):
        to_torch_with_weights(Model(model.graph, {**model.weights, key: np.zeros(2, np.float32)}))
