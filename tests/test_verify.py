"""The verifier names the node and the problem."""
import pytest

from autonl.ir import Choice, Graph, Node, VerifyError, build_preset, f32, parse_graph, verify
from autonl.ir import load_graph

GOOD = """graph g(%x: f32[1,8,16,16]) -> f32[1,8,16,16] {
  %c : f32[1,8,16,16] = conv2d(%x) {out=8, k=3}
  %a : f32[1,8,16,16] = relu6(%c)
  return %a
}
"""


def check(text):
    verify(parse_graph(text))


def test_good_graph_verifies():
    check(GOOD)


@pytest.mark.parametrize("edit, fragment", [
    (("conv2d(%x)", "convv2d(%x)"), "node %c (convv2d): unknown op 'convv2d'; did you mean 'conv2d'?"),
    (("{out=8, k=3}", "{out=8, kk=3}"), "node %c (conv2d): unknown attribute 'kk'; did you mean 'k'?"),
    (("{out=8, k=3}", "{k=3}"), "node %c (conv2d): missing required attribute 'out'"),
    (("{out=8, k=3}", "{out=8, k=true}"), "node %c (conv2d): attribute 'k' expects int, got True"),
    (("relu6(%c)", "relu6(%cc)"), "node %a (relu6): input %cc is not defined"),
    (("relu6(%c)", "relu6(%c, %x)"), "node %a (relu6): relu6 takes 1 inputs, got 2"),
    (("conv2d(%x)", "conv2d(%a)"), "is part of a cycle: %"),
    (("f32[1,8,16,16] = conv2d", "f32[1,8,16,15] = conv2d"), "node %c (conv2d): declared type f32[1,8,16,15]"),
    (("{out=8, k=3}", "{out=8, k=3, groups=3}"), "groups=3 must divide input channels 8"),
    (("return %a", "return %zz"), "graph output %zz is not defined"),
])
def test_problems_are_named(edit, fragment):
    with pytest.raises(VerifyError) as info:
        check(GOOD.replace(*edit))
    assert fragment in str(info.value)


def test_file_errors_carry_line_and_column(tmp_path):
    p = tmp_path / "g.ir"
    p.write_text(GOOD.replace("relu6(%c)", "relu6(%cc)"))
    with pytest.raises(VerifyError) as info:
        load_graph(p)
    assert str(info.value).startswith(f"{p}:3:3: node %a (relu6): input %cc")


def test_choice_options_are_checked():
    g = build_preset("search-space", resolution=64)
    g.node("mbconv_1").attrs["k"] = Choice(3, "five")
    with pytest.raises(VerifyError, match=r"node %mbconv_1 \(mbconv\): choice option of attribute 'k' expects int"):
        verify(g)


def test_a_choice_must_not_change_the_output_type():
    g = build_preset("search-space", resolution=64)
    g.node("mbconv_1").attrs["out"] = Choice(24, 32)
    with pytest.raises(VerifyError, match="choices give different output types"):
        verify(g)


def test_discrete_graph_required():
    g = build_preset("search-space", resolution=64)
    verify(g)
    with pytest.raises(VerifyError, match="is still a choice .* derive it first"):
        verify(g, allow_relaxed=False)
    verify(build_preset("autonl-l", resolution=64), allow_relaxed=False)


def test_skip_needs_identity_residual_and_a_choice():
    g = build_preset("search-space", resolution=64)
    g.node("mbconv_2").attrs["skip"] = True
    with pytest.raises(VerifyError, match="skip=true outside a choice"):
        verify(g)
    g = build_preset("search-space", resolution=64)
    g.node("mbconv_1").attrs["skip"] = Choice(False, True)  # mbconv_1 has stride 2: no residual
    with pytest.raises(VerifyError, match="skip needs an identity residual"):
        verify(g)


def test_missing_type_asks_for_shape_inference():
    g = Graph("g", {"x": f32(1, 4)}, [Node("r", "relu", ["x"])], ["r"])
    with pytest.raises(VerifyError, match="run the shape-inference pass"):
        verify(g)


def test_duplicate_names_refused():
    with pytest.raises(VerifyError, match="defined twice"):
        Graph("g", {"x": f32(1)}, [Node("r", "relu", ["x"]), Node("r", "relu", ["x"])], ["r"])
