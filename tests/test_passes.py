"""Pass infrastructure and built-in passes: Before/Expected graphs in the text form."""
import subprocess
import sys
import textwrap

import pytest

from autonl.ir import (AutonlError, DuplicateNameError, UnknownNameError, assert_structural_equal, build_preset,
                       parse_graph)
from autonl.passes import (DumpIR, Pass, PassError, PassManager, PassResult, PreconditionError, PassTimes,
                           analyze_cost, create_pass, find_nodes, get_pass, match_pattern, register_pass)
from autonl.passes.dce import DeadCodeElimination
from autonl.passes.lower_composites import LowerComposites
from autonl.passes.shape_inference import ShapeInference


def run(p, text):
    g = parse_graph(text)
    return p(g)


def test_dce_removes_what_no_output_needs():
    before = """graph g(%x: f32[1,8,4,4]) {
      %a : f32[1,8,4,4] = relu(%x)
      %dead : f32[1,8,4,4] = sigmoid(%a)
      %dead2 : f32[1,8,4,4] = add(%dead, %x)
      %b : f32[1,8,4,4] = silu(%a)
      return %b
    }"""
    expected = """graph g(%x: f32[1,8,4,4]) {
      %a : f32[1,8,4,4] = relu(%x)
      %b : f32[1,8,4,4] = silu(%a)
      return %b
    }"""
    result = run(DeadCodeElimination(), before)
    assert result.modified
    assert_structural_equal(result.graph, parse_graph(expected))
    again = DeadCodeElimination()(result.graph)
    assert not again.modified


def test_shape_inference_fills_and_fixes_types():
    text = """graph g(%x: f32[2,8,32,32]) {
      %c = conv2d(%x) {out=16, k=3, s=2}
      %p = global_avg_pool(%c)
      %l : f32[9,9] = linear(%p) {out=10}
      return %l
    }"""
    result = run(ShapeInference(), text)
    assert result.modified
    g = result.graph
    assert str(g.node("c").type) == "f32[2,16,16,16]"
    assert str(g.node("p").type) == "f32[2,16]"
    assert str(g.node("l").type) == "f32[2,10]"
    assert not ShapeInference()(g).modified


LIGHTNL_BEFORE = """graph g(%x: f32[1,16,8,8]) {
  %z = lightnl(%x) {r=0.25, s=2}
  return %z
}"""

# Written by hand from method.md section 1: r*C = 4 query/key channels, keys and values
# strided by 2 (16 positions), key-value first is cheaper here (5120 vs 20480 MACs).
LIGHTNL_EXPECTED = """graph g(%x: f32[1,16,8,8]) {
  %q  = slice(%x) {axis=1, start=0, end=4}
  %sh = slice(%x) {axis=2, step=2}
  %sw = slice(%sh) {axis=3, step=2}
  %k  = slice(%sw) {axis=1, end=4}
  %qf = reshape(%q) {shape=[-1, 4, 64]}
  %kf = reshape(%k) {shape=[-1, 4, 16]}
  %kt = permute(%kf) {dims=[0, 2, 1]}
  %vf = reshape(%sw) {shape=[-1, 16, 16]}
  %kv = matmul(%vf, %kt)
  %y  = matmul(%kv, %qf)
  %n  = scale(%y) {factor=0.015625}
  %ym = reshape(%n) {shape=[-1, 16, 8, 8]}
  %dw = conv2d(%ym) {out=16, k=3, groups=16}
  %bn = batch_norm(%dw) {zero_init=true}
  %z  = add(%x, %bn)
  return %z
}"""


def typed(text):
    g = parse_graph(text)
    ShapeInference()(g)
    return g


def test_lower_lightnl_matches_hand_written_expected():
    result = LowerComposites()(typed(LIGHTNL_BEFORE))
    assert result.modified
    assert_structural_equal(result.graph, typed(LIGHTNL_EXPECTED))
    assert analyze_cost(result.graph).macs == analyze_cost(typed(LIGHTNL_BEFORE)).macs
    assert [n.name for n in result.graph][:2] == ["z.q", "z.stride_h"]


def test_lower_uninserted_lightnl_is_identity():
    result = LowerComposites()(typed(LIGHTNL_BEFORE.replace("s=2}", "s=2, insert=false}")))
    assert result.modified and len(result.graph) == 0 and result.graph.outputs == ["x"]


def test_lower_only_selected_composites_and_refuse_relaxed():
    g = build_preset("autonl-s", resolution=64)
    assert find_nodes(g, "lightnl")
    only_nl = create_pass('lower-composites{ops=["lightnl"]}')(g.copy()).graph
    assert not find_nodes(only_nl, "lightnl") and len(find_nodes(only_nl, "mbconv")) == 18
    assert find_nodes(only_nl, "matmul")
    with pytest.raises(PreconditionError, match=r"%lightnl_0 \(lightnl\) still has choices"):
        LowerComposites()(build_preset("search-space", resolution=64))
    with pytest.raises(AutonlError, match="'conv2d' is not a composite op"):
        LowerComposites(ops=["conv2d"])


class BreakTypes(Pass):
    name = "break-types"

    def call(self, graph):
        graph.node("stem").attrs["out"] = 7
        return PassResult(graph, True)


def test_manager_verifies_after_each_pass_and_names_the_culprit():
    g = build_preset("mobilenetv2", resolution=64)
    with pytest.raises(PassError) as info:
        PassManager(["dce", BreakTypes()])(g)
    msg = str(info.value)
    assert "after pass 'break-types' (2 of 2, after 'dce')" in msg
    assert "%stem (conv2d): declared type" in msg
    assert g.node("stem").attrs["out"] == 32  # the manager works on a copy


def test_manager_timing_and_dumps(tmp_path):
    timing = PassTimes()
    g = build_preset("autonl-s", resolution=64)
    result = PassManager(["lower-composites", "dce", "shape-inference"],
                         instruments=[timing, DumpIR(tmp_path)])(g)
    assert result.modified
    assert [r[0] for r in timing.records] == ["lower-composites", "dce", "shape-inference"]
    assert [r[2] for r in timing.records] == [True, False, False]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["000_input.ir", "001_lower_composites.ir", "002_dce.ir", "003_shape_inference.ir"]
    assert parse_graph((tmp_path / "000_input.ir").read_text()) == g
    assert parse_graph((tmp_path / "003_shape_inference.ir").read_text()) == result.graph


def test_registry_names():
    with pytest.raises(UnknownNameError, match="unknown pass 'dec'; did you mean 'dce'"):
        get_pass("dec")
    with pytest.raises(DuplicateNameError):
        register_pass("dce")(BreakTypes)
    with pytest.raises(AutonlError, match="pass 'dce' has no option 'aggressive'"):
        create_pass("dce{aggressive=true}")


def test_match_by_op_and_by_pattern():
    g = PassManager(["lower-composites"])(build_preset("mobilenetv2", resolution=64)).graph
    convs = find_nodes(g, "conv2d")
    depthwise = [n for n in convs if n.attrs.get("groups", 1) > 1]
    assert len(find_nodes(g, "conv2d", k=3)) == len(depthwise) + 1  # + the stem
    pattern = parse_graph("""graph p(%i: f32[1]) {
      %c = conv2d(%i) {k=1}
      %b = batch_norm(%c)
      %r = relu6(%b)
      return %r
    }""")
    matches = list(match_pattern(g, pattern))
    # 1x1 conv + BN + ReLU6: every expansion conv and the head; projections have no activation
    expected = [n for n in convs if n.attrs.get("k", 1) == 1 and g.users(g.users(n.name)[0].name)[0].op == "relu6"]
    assert len(matches) == len(expected) == 16 + 1
    assert all(g.node(m["c"]).op == "conv2d" and g.node(m["r"]).op == "relu6" for m in matches)


PLUGIN = '''
from autonl.passes import Pass, PassResult

class Relu6ToRelu(Pass):
    """Replace relu6 by relu (a plugin pass)."""

    def call(self, graph):
        nodes = [n for n in graph if n.op == "relu6"]
        for n in nodes:
            n.op = "relu"
        return PassResult(graph, bool(nodes))
'''


def test_entry_point_plugin(tmp_path, cli):
    """A third-party distribution registers a pass under the `autonl.passes` entry-point group."""
    (tmp_path / "autonl_demo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "autonl_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: autonl-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[autonl.passes]\nrelu6-to-relu = autonl_demo_plugin:Relu6ToRelu\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from autonl.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """)
    listed = subprocess.run([sys.executable, "-c", code, "passes"], capture_output=True, text=True)
    assert "relu6-to-relu" in listed.stdout and "a plugin pass" in listed.stdout, listed.stderr
    out = subprocess.run([sys.executable, "-c", code, "opt", "mobilenetv2", "-r", "64", "-p", "relu6-to-relu"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "relu6(" not in out.stdout and "relu(" in out.stdout
