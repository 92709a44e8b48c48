"""The torch backend: lowering, costs measured on the module, LightNL, weights in and out."""
import torch

import pytest

from autonl.ir import AutonlError, build_preset, parse_graph
from autonl.ir.ops import lightnl_matmul_macs, lightnl_order
from autonl.passes import PassManager, analyze_cost, find_nodes
from autonl.backends.torch.lower import to_torch
from autonl.backends.torch.lower.modules import LightNL
from autonl.backends.torch.lower.mac_count import count_macs, count_params
from autonl.backends.torch.train.weights import load_model, load_weights, save_model
from autonl.passes.shape_inference import ShapeInference

from helpers import discrete_presets


def randomize_bn(module):
    """Give every BN non-trivial statistics and affine values (LightNL's gamma starts at 0)."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5
    return module


@pytest.mark.parametrize("preset", discrete_presets())
def test_params_and_hooked_macs_equal_the_ir(preset):
    g = build_preset(preset)
    module = to_torch(g).eval()
    report = analyze_cost(g)
    assert count_params(module) == report.params
    assert count_macs(module, torch.zeros(1, 3, 224, 224)) == report.macs


def test_generated_code_reads_like_pytorch():
    code = to_torch(build_preset("autonl-s", resolution=64)).code
    assert "mbconv_1 = self.mbconv_1(mbconv_0)" in code
    assert "lightnl_1 = self.lightnl_1(mbconv_1)" in code
    assert "add_2 = mbconv_2 + lightnl_1" in code
    assert "torch.nn.functional.silu(stem_bn)" in code
    lowered = to_torch(PassManager(["lower-composites"])(build_preset("autonl-s", resolution=64)).graph).code
    assert "mbconv_1_expand = self.mbconv_1.expand(mbconv_0_project_bn)" in lowered
    assert "lightnl_1_kv = self.lightnl_1.kv(lightnl_1_v_flat, lightnl_1_k_t)" in lowered


@pytest.mark.parametrize("preset", discrete_presets())
def test_lowered_graph_same_weights_same_logits(preset):
    g = build_preset(preset, resolution=64)
    module = randomize_bn(to_torch(g)).eval()
    lowered = to_torch(PassManager(["lower-composites"])(g).graph).eval()
    lowered.load_state_dict(module.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(module(x), lowered(x), atol=1e-5)


def test_lightnl_orders_agree_and_the_cheaper_is_chosen_in_autonl_l():
    g = build_preset("autonl-l")
    module = to_torch(g)
    torch.manual_seed(0)
    positions = find_nodes(g, "lightnl")
    assert len(positions) == 14
    for node in positions:
        t = g.type_of(node.inputs[0])
        a = node.attrs
        macs = lightnl_matmul_macs(t, a["r"], a.get("s", 1))
        block: LightNL = getattr(module, node.name)
        assert block.order == lightnl_order(t, a["r"], a.get("s", 1)) == min(macs, key=macs.get)
        x = torch.randn(2, *t.shape[1:], dtype=torch.float64)
        block = block.double()
        torch.nn.init.normal_(block.bn.weight)
        kv, aff = block(x, "key_value_first"), block(x, "affinity_first")
        rel = ((kv - aff).norm() / (kv - x).norm()).item()
        assert rel < 1e-5, (node.name, rel)
        counted = count_macs(block, x) - count_macs(block.dw, x)
        assert counted == 2 * min(macs.values())  # batch of 2, cheaper order


def test_lightnl_matches_the_formula():
    """z = x + BN(DW(q (k^T v) / HW)) written out with einsum, as method.md section 1 states it."""
    torch.manual_seed(0)
    block = LightNL(16, 0.25, 2, "key_value_first", 1e-5, 0.1).double().eval()
    torch.nn.init.normal_(block.bn.weight)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    q = x[:, :4].flatten(2).transpose(1, 2)             # HW x rC
    xs = x[:, :, ::2, ::2]
    k = xs[:, :4].flatten(2).transpose(1, 2)            # h'w' x rC
    v = xs.flatten(2).transpose(1, 2)                   # h'w' x C
    y = torch.einsum("bic,bjc,bjd->bid", q, k, v) / 64  # no softmax
    y = y.transpose(1, 2).reshape(2, 16, 8, 8)
    assert torch.allclose(block(x), x + block.bn(block.dw(y)), atol=1e-12)
    fresh = LightNL(16, 0.25, 2, "key_value_first", 1e-5, 0.1).eval()
    assert torch.equal(fresh(x.float()), x.float())      # gamma 0: starts as the identity


def test_non_local_lowers_and_matches_its_lowering():
    g = parse_graph("graph nl(%x: f32[1,16,8,8]) {\n  %n = non_local(%x)\n  return %n\n}")
    ShapeInference()(g)
    module = randomize_bn(to_torch(g)).eval()
    lowered = to_torch(PassManager(["lower-composites"])(g).graph).eval()
    lowered.load_state_dict(module.state_dict())
    x = torch.randn(3, 16, 8, 8)
    assert torch.allclose(module(x), lowered(x), atol=1e-5)
    assert count_macs(module, x[:1]) == analyze_cost(g).macs


def test_weights_round_trip_and_bad_files(tmp_path):
    g = build_preset("autonl-s", resolution=32)
    module = randomize_bn(to_torch(g)).eval()
    save_model(g, module, tmp_path / "m")
    graph, back = load_model(tmp_path / "m")
    x = torch.randn(1, 3, 32, 32)
    assert graph == g and torch.equal(back(x), module(x))
    weights = tmp_path / "m" / "weights.pt"
    data = weights.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(AutonlError, match="trunc.pt: not a readable weights file"):
        load_weights(to_torch(g), tmp_path / "trunc.pt")
    other = to_torch(build_preset("autonl-l", resolution=32)).state_dict()
    torch.save(other, tmp_path / "foreign.pt")
    with pytest.raises(AutonlError, match="foreign.pt: weights do not fit graph 'autonl_s': missing"):
        load_weights(to_torch(g), tmp_path / "foreign.pt", "autonl_s")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(AutonlError, match="not a weights file: it holds a list"):
        load_weights(to_torch(g), tmp_path / "list.pt")


def test_relaxed_graph_is_refused():
    with pytest.raises(AutonlError, match="still a choice"):
        to_torch(build_preset("search-space", resolution=32))
