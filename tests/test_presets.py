"""Presets as block strings: decoding, and agreement with method.md section 5 (its tables are
copied in tests/data/method_architectures.md)."""
import re

import pytest

from autonl.ir import AutonlError, Choice, UnknownNameError, build_preset, get_preset
from autonl.ir.presets import decode_block, make_divisible
from autonl.passes import find_nodes

from helpers import method_rows


@pytest.mark.parametrize("preset, title", [("autonl-s", "AutoNL-S:"), ("autonl-l", "AutoNL-L:")])
def test_published_architectures_match_method_md(preset, title):
    rows = method_rows(title)
    g = build_preset(preset)
    blocks = find_nodes(g, "mbconv")
    assert len(blocks) == len(rows)
    for i, (node, (e, c, n, s, k, nl_ratio, nl_stride, se_ratio)) in enumerate(zip(blocks, rows)):
        assert n == 1
        a = node.attrs
        assert (a["e"], a["out"], a.get("s", 1), a["k"], a.get("se", 0)) == (e, c, s, k, se_ratio), node.name
        nl = g.nodes.get(f"lightnl_{i}")
        if nl_ratio:
            assert nl is not None and nl.attrs["r"] == nl_ratio and nl.attrs.get("s", 1) == nl_stride
            assert nl.inputs == [node.name]  # right after the projection
        else:
            assert nl is None


def test_mobilenetv2_layout():
    g = build_preset("mobilenetv2")
    blocks = find_nodes(g, "mbconv")
    assert len(blocks) == 17
    assert [b.attrs["out"] for b in blocks] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96,
                                                160, 160, 160, 320]
    assert len(find_nodes(g, "add")) == 10
    assert not find_nodes(g, "lightnl") and all(b.attrs["act"] == "relu6" for b in blocks)


def test_search_space_has_the_method_choices():
    g = build_preset("search-space")
    blocks = find_nodes(g, "mbconv")
    assert len(blocks) == 22
    assert not blocks[0].relaxed
    for b in blocks[1:]:
        assert b.attrs["k"] == Choice(3, 5) and b.attrs["e"] == Choice(3, 6)
    skippable = [b.name for b in blocks if "skip" in b.attrs]
    assert len(skippable) == 15  # 3 per stage of 4 blocks, five such stages
    for i in range(22):
        nl = g.node(f"lightnl_{i}")
        assert nl.attrs["insert"] == Choice(False, True)
        assert nl.attrs["r"] == Choice(0.125, 0.25) and nl.attrs["s"] == Choice(1, 2)


def test_block_string_keys():
    b = decode_block("ir_r4_k3|5_s2_e3|6_c24_skip_nl0|0.25_nls2")
    assert (b.repeats, b.k, b.s, b.e, b.c, b.skip, b.nl, b.nls) == (4, Choice(3, 5), 2, Choice(3, 6), 24,
                                                                     True, Choice(0, 0.25), 2)


@pytest.mark.parametrize("text, fragment", [
    ("ir_r1_k3_s1_e1_c16_x5", "unknown key 'x5'"),
    ("dw_k3_s1_e1_c16", "unknown block type 'dw'"),
    ("ir_k3_s1_c16", "missing key(s) e"),
    ("ir_k3_s1_e1_c16_k5", "key 'k' is given twice"),
    ("ir_k3_s1_e1_cabc", "key 'c' needs a number"),
    ("ir_k3_s1|2_e1_c16", "key 's' cannot be a choice"),
    ("ir_k3_s1_e1_c16_skipper", "unknown key 'skipper'"),
])
def test_block_string_errors(text, fragment):
    with pytest.raises(AutonlError, match=re.escape(fragment)):
        decode_block(text)


def test_unknown_preset_lists_known():
    with pytest.raises(UnknownNameError, match="unknown preset 'autonl-m'.*known presets: autonl-l, autonl-s"):
        get_preset("autonl-m")


def test_width_and_resolution():
    g = build_preset("mobilenetv2", resolution=160, width=0.5, batch=4, num_classes=10)
    assert g.inputs["x"].shape == (4, 3, 160, 160)
    assert g.type_of(g.outputs[0]).shape == (4, 10)
    assert g.node("stem").attrs["out"] == 16 and g.node("head").attrs["out"] == 1280
    assert make_divisible(32 * 0.35) == 16 and make_divisible(24 * 1.4) == 32
    with pytest.raises(AutonlError, match="resolution must be a positive integer"):
        build_preset("mobilenetv2", resolution=0)
