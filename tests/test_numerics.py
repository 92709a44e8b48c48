"""LightNL's numerics: the bounded norm="l2" variant, and what happens when logits overflow
(training stops with one line, compile refuses, eval counts)."""
import json
import random

import numpy as np
import pytest
import torch

from autonl.backends.loading import deploy_model
from autonl.backends.onnx.export import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.backends.torch.lower import to_torch
from autonl.backends.torch.lower.modules import LightNL
from autonl.backends.torch.search.supernet import Supernet
from autonl.backends.torch.train.weights import save_model
from autonl.ir import build_preset, load_graph, parse_graph
from autonl.ir.presets import SEARCH_MACRO, build_network
from autonl.passes import PassManager, analyze_cost
from autonl.passes.pipelines import search_space_pipeline

from helpers import assert_one_line_error, assert_supernet_equals_derived

NL_IR = """
graph nl(%x: f32[1,3,16,16]) {
  %conv = conv2d(%x) {out=16, k=3, s=1}
  %bn = batch_norm(%conv)
  %nl1 = lightnl(%bn) {r=0.25, s=1, norm="NORM"}
  %nl2 = lightnl(%nl1) {r=0.25, s=2, norm="NORM"}
  %nl3 = lightnl(%nl2) {r=0.125, s=1, norm="NORM"}
  %pool = global_avg_pool(%nl3)
  %flat = flatten(%pool)
  %fc = linear(%flat) {out=3}
  return %fc
}
"""


def nl_graph(norm: str, classes: int = 3):
    text = NL_IR.replace("NORM", norm).replace("{out=3}", f"{{out={classes}}}")
    return PassManager(["shape-inference"])(parse_graph(text)).graph


def nl_module(norm: str, gamma: float = 1.0):
    graph = nl_graph(norm)
    torch.manual_seed(0)
    module = to_torch(graph).eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, LightNL):
                m.bn.weight.fill_(gamma)     # not the identity it starts as
    return graph, module


def test_l2_lightnl_stays_finite_where_the_papers_product_overflows():
    """Three stacked blocks: the paper's product is cubic in its input (3^3 = 27th power over
    three blocks) and overflows fp32 for an input scaled by 1e3; unit-length queries and keys
    keep every block linear in its input."""
    x = torch.randn(2, 3, 16, 16) * 1e3
    with torch.no_grad():
        assert not torch.isfinite(nl_module("none")[1](x)).all()
        y = nl_module("l2")[1](x)
    assert torch.isfinite(y).all()
    # homogeneous of degree 1 up to BN's shift: scaling the input by 10 scales the block output at most ~10x
    with torch.no_grad():
        block = LightNL(16, 0.25, 1, "key_value_first", 1e-3, 0.01, norm="l2").eval()
        block.bn.weight.fill_(1.0)
        v = torch.randn(1, 16, 8, 8)
        small, big = block(v) - v, block(v * 10) - v * 10
    assert big.abs().max() <= 10 * small.abs().max() + 1e-3


@pytest.mark.parametrize("norm", ["none", "l2"])
def test_onnx_export_of_each_norm_matches_torch(norm):
    graph, module = nl_module(norm)
    from autonl.backends.loading import TorchModel
    model = TorchModel(graph, module, "test", "test")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = run(session(export_onnx(deploy_model(model))), x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    ops = [n.op for n in deploy_model(model).graph]
    assert ("l2_normalize" in ops) == (norm == "l2")
    # the norm is elementwise work: no MACs, the same cost for both
    assert analyze_cost(graph).macs == analyze_cost(nl_graph("none")).macs


def test_supernet_with_the_papers_norm_equals_its_derived_networks():
    """The default space is l2 (covered by test_supernet); the paper's product through the
    same gates must also equal each derived network exactly."""
    space = PassManager(list(search_space_pipeline("autonl", "none")))(build_network(SEARCH_MACRO, 32, num_classes=4)).graph
    assert {n.attrs.get("norm") for n in space if n.op == "lightnl"} == {"none"}
    torch.manual_seed(0)
    supernet = Supernet(space).eval()
    assert_supernet_equals_derived(space, supernet, 8, random.Random(1), torch.randn(2, 3, 32, 32), check_cost=False)


def test_the_search_space_says_which_lightnl_it_holds(cli, tmp_path):
    assert {n.attrs["norm"] for n in build_preset("search-space", resolution=32) if n.op == "lightnl"} == {"l2"}
    from autonl.passes.sources import relaxed_graph     # --lightnl-norm, on the relaxed preset too
    assert {n.attrs["norm"] for n in relaxed_graph("search-space", "autonl", 32, None, 4, "none")
            if n.op == "lightnl"} == {"none"}
    out = cli("opt", "search-space", "-p", 'insert-lightnl{norm="nope"}', "-o", tmp_path / "g.ir")
    assert_one_line_error(out, "norm")


@pytest.fixture(scope="module")
def overflowing_model(tmp_path_factory):
    """A model folder (norm="none", trained on digits, as its data.json says) whose LightNL
    BN gammas are scaled so that every image overflows."""
    folder = tmp_path_factory.mktemp("overflow") / "model"
    graph = nl_graph("none", classes=10)
    torch.manual_seed(0)
    module = to_torch(graph).eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, LightNL):
                m.bn.weight.fill_(1e12)
    from autonl.backends.torch.data import data_facts
    save_model(graph, module, folder, data_facts("digits", 16))
    return folder


def test_forced_overflow_stops_training_compile_refuses_and_eval_counts(cli, tmp_path, overflowing_model):
    train = cli("train", overflowing_model, "--data", "digits", "--steps", "3", "--out", tmp_path / "t",
                "--workers", "0", "--batch-size", "8")
    errors = [line for line in train.stderr.splitlines() if "error:" in line]   # beside the progress bar
    assert train.returncode == 1 and len(errors) == 1 and "Traceback" not in train.stderr
    assert "the loss became nan at step 0" in errors[0] and 'norm="l2"' in errors[0]
    compiled = cli("compile", overflowing_model, "--out", tmp_path / "c", "--check-images", "16")
    assert_one_line_error(compiled, "non-finite logits", "--allow-nonfinite")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    allowed = cli("compile", overflowing_model, "--out", tmp_path / "c", "--check-images", "16", "--allow-nonfinite")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: 16 of 16 validation images" in allowed.stderr
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["checks"]["real_data"]["nonfinite_images"] == 16
    assert manifest["data"]["data"] == "digits"
    ev = cli("eval", overflowing_model, "--val-size", "20", "--workers", "0")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["val_nonfinite"] == 20
    assert "warning: 20 of 20 validation images give non-finite logits" in ev.stderr


def test_load_graph_keeps_an_old_file_on_the_papers_lightnl(tmp_path):
    """A graph file written before the norm attribute existed holds the paper's block."""
    path = tmp_path / "old.ir"
    path.write_text(NL_IR.replace(', norm="NORM"', ""))
    assert {n.attrs.get("norm", "none") for n in load_graph(path) if n.op == "lightnl"} == {"none"}
    from autonl.ir.ops import get_op
    assert get_op("lightnl").full_attrs({})["norm"] == "none"
