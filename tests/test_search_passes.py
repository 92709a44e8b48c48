"""insert-lightnl, make-choices (search-space files) and derive (decisions)."""
import json

import pytest

from autonl.ir import AutonlError, Choice, assert_structural_equal, build_preset, choice_space, parse_graph
from autonl.passes import PassManager, SearchSpace, analyze_cost, create_pass, find_nodes
from autonl.passes.derive import Derive
from autonl.passes.insert_lightnl import InsertLightNL
from autonl.passes.make_choices import MakeChoices
from autonl.passes.shape_inference import ShapeInference
from autonl.passes.sources import relaxed_graph

from helpers import method_rows


def typed(text):
    g = parse_graph(text)
    ShapeInference()(g)
    return g


BEFORE = """graph g(%x: f32[1,16,8,8]) {
  %stem = conv2d(%x) {out=16, k=3}
  %mbconv_1 = mbconv(%stem) {out=16, e=3}
  %add_1 = add(%mbconv_1, %stem)
  %mbconv_2 = mbconv(%add_1) {out=24, e=3, s=2}
  return %mbconv_2
}"""

EXPECTED = """graph g(%x: f32[1,16,8,8]) {
  %stem = conv2d(%x) {out=16, k=3}
  %mbconv_1 = mbconv(%stem) {out=16, e=3}
  %lightnl_1 = lightnl(%mbconv_1) {insert=choice(false, true), r=choice(0.125, 0.25), s=choice(1, 2), norm="l2"}
  %add_1 = add(%lightnl_1, %stem)
  %mbconv_2 = mbconv(%add_1) {out=24, e=3, s=2}
  %lightnl_2 = lightnl(%mbconv_2) {insert=choice(false, true), r=choice(0.125, 0.25), s=choice(1, 2), norm="l2"}
  return %lightnl_2
}"""


def test_insert_lightnl_sits_between_projection_and_residual():
    result = InsertLightNL()(typed(BEFORE))
    assert result.modified
    assert_structural_equal(result.graph, typed(EXPECTED))
    assert list(result.graph.nodes)[:4] == ["stem", "mbconv_1", "lightnl_1", "add_1"]
    assert not InsertLightNL()(result.graph).modified  # a block with a LightNL already keeps it


def test_insert_lightnl_selects_by_pattern_and_options():
    g = InsertLightNL(nodes="mbconv_2", ratios=[0.25], strides=[2], optional=False)(typed(BEFORE)).graph
    nl = find_nodes(g, "lightnl")
    assert [n.name for n in nl] == ["lightnl_2"] and nl[0].attrs == {"r": 0.25, "s": 2, "norm": "l2"}


def macro_network():
    """The search space's macro network: every block, k=3, e=6, no LightNL."""
    space = build_preset("search-space")
    pick = {"k": 3, "e": 6, "skip": False, "insert": False, "r": 0.25, "s": 1}
    decisions = {n: {a: pick[a] for a in attrs} for n, attrs in choice_space(space).items()}
    return Derive(decisions)(space).graph


def test_insert_and_make_choices_rebuild_the_search_space_preset():
    macro = macro_network()
    assert not macro.relaxed and not find_nodes(macro, "lightnl") and len(find_nodes(macro, "mbconv")) == 22
    rebuilt = PassManager(['insert-lightnl{space="autonl"}', "make-choices"])(macro).graph
    assert rebuilt == build_preset("search-space")


def test_make_choices_rules(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[[choice]]\nop = "mbconv"\nattr = "se"\noptions = [0.0, 0.25, 0.5]\nnodes = "mbconv_(1|2)"\n')
    g = MakeChoices(str(space))(build_preset("mobilenetv2", resolution=64)).graph
    assert [n.name for n in g if n.relaxed] == ["mbconv_1", "mbconv_2"]
    assert g.node("mbconv_1").attrs["se"] == Choice(0.0, 0.25, 0.5)


@pytest.mark.parametrize("text, fragment", [
    ('[[choice]]\nop = "mbconvv"\nattr = "k"\noptions = [3, 5]\n', "unknown op 'mbconvv'; did you mean 'mbconv'?"),
    ('[[choice]]\nop = "mbconv"\nattr = "kernel"\noptions = [3, 5]\n', "op 'mbconv' has no attribute 'kernel'"),
    ('[[choice]]\nop = "mbconv"\nattr = "k"\noptions = [3, "5"]\n', "expects int, got '5'"),
    ('[[choice]]\nop = "mbconv"\nattr = "k"\noptions = [3]\n', "at least two options"),
    ('[[choice]]\nop = "mbconv"\nattr = "k"\noptions = [3, 5]\nwhere = "x"\n', "unknown key 'where'"),
    ('[[choice]]\nop = "mbconv"\nattr = "k"\noptions = [3, 5]\nnodes = "block_.*"\n', "selects no node"),
    ('[[choice]]\nop = "mbconv"\nattr = "s"\noptions = [1, 2]\n', "cannot give %mbconv_0.s the choices"),
    ('[[choice]\nop = "mbconv"', "space.toml: "),
    ('[search]\nx = 1\n', "unknown section 'search'"),
])
def test_bad_space_files(tmp_path, text, fragment):
    space = tmp_path / "space.toml"
    space.write_text(text)
    with pytest.raises(AutonlError) as info:
        PassManager([MakeChoices(str(space))])(build_preset("mobilenetv2", resolution=64))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_derive_collapses_skips_and_absent_lightnl():
    space = build_preset("search-space", resolution=64)
    decisions = {n: {a: c.options[-1] for a, c in attrs.items()} for n, attrs in choice_space(space).items()}
    decisions["mbconv_2"]["skip"] = True
    decisions["lightnl_3"]["insert"] = False
    for n in ("mbconv_3", "mbconv_4"):
        decisions[n]["skip"] = False
    result = PassManager([Derive(decisions)])(space)
    g = result.graph
    assert not g.relaxed and "mbconv_2" not in g.nodes and "add_2" not in g.nodes and "lightnl_2" not in g.nodes
    assert "lightnl_3" not in g.nodes and g.node("add_3").inputs == ["mbconv_3", "lightnl_1"]
    assert g.node("lightnl_4").attrs == {"r": 0.25, "s": 2, "norm": "l2", "eps": 0.001, "momentum": 0.01}


def published_decisions(space, rows, se=None):
    """Decisions that encode a published architecture's rows in the search space: blocks of a
    stage are kept in order and the remaining ones skipped."""
    blocks = find_nodes(space, "mbconv")
    stages, start = [], 0
    for b in blocks:
        if b.name != blocks[0].name and "skip" not in b.attrs:
            stages.append(start)
            start = blocks.index(b)
    stages.append(start)
    decisions = {}
    row_iter = iter(rows)
    pending = next(row_iter)
    for i, b in enumerate(blocks):
        e, c, n, s, k, nl_ratio, nl_stride, se_ratio = pending if pending else (0,) * 8
        takes = pending is not None and b.attrs["out"] == c
        d = {}
        if "k" in b.choices():
            d["k"], d["e"] = (k, e) if takes else (3, 3)
        if "skip" in b.choices():
            d["skip"] = not takes
        if se is not None and "se" in b.choices():
            d["se"] = float(se_ratio) if takes else 0.0
        if d:
            decisions[b.name] = d
        decisions[f"lightnl_{i}"] = ({"insert": bool(nl_ratio), "r": float(nl_ratio or 0.25), "s": nl_stride}
                                     if takes else {"insert": False, "r": 0.25, "s": 1})
        if takes:
            pending = next(row_iter, None)
    assert pending is None, "rows left over"
    return decisions


@pytest.mark.parametrize("preset, title", [("autonl-l", "AutoNL-L:"), ("autonl-s", "AutoNL-S:")])
def test_published_decisions_derive_the_preset(tmp_path, preset, title):
    """With the SE ratio relaxed by a user's rule (as the README shows) and the paper's LightNL
    (norm="none", as the presets hold), the decisions that encode a published architecture
    derive a graph identical to its preset."""
    se_space = tmp_path / "se.toml"
    se_space.write_text('[[choice]]\nop = "mbconv"\nattr = "se"\noptions = [0.0, 0.25, 0.5]\nexclude = ["mbconv_0"]\n')
    space = MakeChoices(str(se_space))(relaxed_graph("search-space", "autonl", None, None, 1000, "none")).graph
    decisions = published_decisions(space, method_rows(title), se=True)
    (tmp_path / "d.json").write_text(json.dumps(decisions))
    derived = PassManager([create_pass(f'derive{{decisions="{tmp_path / "d.json"}"}}')])(space).graph
    target = build_preset(preset)
    assert_structural_equal(derived, target)
    a, b = analyze_cost(derived), analyze_cost(target)
    assert (a.macs, a.params, a.lightnl_macs) == (b.macs, b.params, b.lightnl_macs)


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update({"mbconv_99": {"k": 3}}), "node 'mbconv_99' is not in graph"),
    (lambda d: d["mbconv_1"].update({"kernel": 3}), "node 'mbconv_1' has no choice for attribute 'kernel'"),
    (lambda d: d["mbconv_1"].update({"k": 7}), "node 'mbconv_1' attribute 'k': 7 is not one of the options [3, 5]"),
    (lambda d: d["mbconv_1"].update({"k": "3"}), "node 'mbconv_1' attribute 'k': expected int, got str '3'"),
    (lambda d: d["lightnl_1"].pop("r"), "no decision for node 'lightnl_1' attribute 'r'"),
])
def test_bad_decisions(edit, fragment):
    space = build_preset("search-space", resolution=64)
    decisions = SearchSpace(space).default()
    edit(decisions)
    with pytest.raises(AutonlError) as info:
        Derive(decisions)(space)
    assert fragment in str(info.value)


def test_the_lightnl_only_space_keeps_the_users_blocks():
    """The built-in ``lightnl-only`` space (issue #41) searches LightNL placement, ratio and
    stride only: every block keeps its kernel, expansion and residual, and every derived
    network is the original with LightNL blocks inserted."""
    original = build_preset("mobilenetv2", resolution=32, width=0.35, num_classes=10)
    space = relaxed_graph("mobilenetv2", "lightnl-only", 32, 0.35, 10)
    relaxed = {n.name: n for n in space if n.relaxed}
    assert relaxed and all(n.op == "lightnl" for n in relaxed.values())
    assert {n.name: dict(n.attrs) for n in space if n.op == "mbconv"} == \
        {n.name: dict(n.attrs) for n in original if n.op == "mbconv"}
    none = Derive({name: {"insert": False, "r": 0.125, "s": 1} for name in relaxed})(space).graph
    assert analyze_cost(none).macs == analyze_cost(original).macs
