"""Text and JSON forms: exact round trips (presets and hypothesis-generated graphs), errors."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonl.ir import (Choice, Graph, Node, ParseError, TensorType, build_preset, from_json, parse_graph,
                       print_graph, to_json)
from autonl.ir.choice import same_value
from autonl.ir.types import DTYPES
from autonl.passes import PassManager

from helpers import assert_one_line_error

KEYWORDS = {"graph", "return", "choice", "true", "false"}
ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
value_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,10}", fullmatch=True)
scalar = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=8),
)
plain = st.one_of(scalar, st.lists(scalar, max_size=4))


@st.composite
def choices(draw):
    options = draw(st.lists(plain, min_size=2, max_size=4))
    unique = []
    for o in options:
        if not any(same_value(o, u) for u in unique):
            unique.append(o)
    if len(unique) < 2:
        unique = [0, 1]
    return Choice(*unique)


tensor_types = st.builds(lambda d, s: TensorType(d, tuple(s)), st.sampled_from(DTYPES),
                         st.lists(st.integers(0, 4096), max_size=5))


@st.composite
def graphs(draw):
    """Syntactically arbitrary graphs (ops and attributes need not exist): the forms must hold
    anything the IR can hold. Inputs only reference earlier values, so the stored order is
    topological and printing keeps it."""
    names = draw(st.lists(value_name, min_size=1, max_size=12, unique=True))
    n_inputs = draw(st.integers(1, min(3, len(names))))
    g = Graph(draw(ident), {n: draw(tensor_types) for n in names[:n_inputs]})
    defined = list(names[:n_inputs])
    for name in names[n_inputs:]:
        inputs = draw(st.lists(st.sampled_from(defined), max_size=3))
        attrs = draw(st.dictionaries(ident, st.one_of(plain, choices()), max_size=4))
        typ = draw(st.one_of(st.none(), tensor_types))
        g.nodes[name] = Node(name, draw(ident), inputs, attrs, typ)
        defined.append(name)
    g.outputs = draw(st.lists(st.sampled_from(defined), min_size=1, max_size=3))
    return g


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_text_round_trip_generated(g):
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g
    assert print_graph(back) == text


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_json_round_trip_generated(g):
    text = to_json(g)
    back = from_json(text)
    assert back == g
    assert to_json(back) == text


@pytest.mark.parametrize("preset", ["mobilenetv2", "autonl-s", "autonl-l", "search-space"])
def test_presets_round_trip_byte_identical(preset):
    g = build_preset(preset)
    text = print_graph(g)
    assert print_graph(parse_graph(text)) == text
    assert parse_graph(text) == g
    js = to_json(g)
    assert to_json(from_json(js)) == js
    assert from_json(js) == g


def test_autonl_l_files_round_trip(tmp_path, cli):
    """`autonl show` writes both forms; reading either file and printing gives the same bytes."""
    for fmt, name in (("text", "l.ir"), ("json", "l.json")):
        first = cli("show", "autonl-l", "--format", fmt, check_ok=True).stdout
        (tmp_path / name).write_text(first)
        again = cli("show", tmp_path / name, "--format", fmt, check_ok=True).stdout
        assert again == first


def test_lowered_graph_round_trip():
    g = PassManager(["lower-composites"])(build_preset("autonl-s", resolution=64)).graph
    assert any("." in n.name for n in g)
    assert parse_graph(print_graph(g)) == g
    assert from_json(to_json(g)) == g


def test_types_may_be_left_out_and_comments_are_ignored():
    g = parse_graph("""
    # a hand-written graph
    graph tiny(%x: f32[1,8,4,4]) {   # header comment
      %c = conv2d(%x) {out=16, k=3}  # 1.2K MACs (derived, ignored)
      %r = relu6(%c)
      return %r
    }""")
    assert g.node("c").type is None and g.node("c").attrs == {"out": 16, "k": 3}


def test_values_keep_their_types():
    g = parse_graph('graph t(%x: f32[1]) {\n  %a = f(%x) {i=1, f=1.0, b=true, s="1", l=[1, 2.5], '
                    'c=choice(1, 1.0, true)}\n  return %a\n}\n')
    attrs = g.node("a").attrs
    assert type(attrs["i"]) is int and type(attrs["f"]) is float and attrs["b"] is True
    assert attrs["s"] == "1" and attrs["l"] == [1, 2.5]
    assert [type(o) for o in attrs["c"].options] == [int, float, bool]


@pytest.mark.parametrize("text, line, col, fragment", [
    ("graph g(%x: f32[1]) {\n  %a = relu(%x\n  return %a\n}\n", 3, 3, "unexpected 'return'"),
    ("graph g(%x: f32[1]) {\n  %a = relu(%x) {k=}\n  return %a\n}\n", 2, 20, "unexpected '}'"),
    ("graph g(%x: f32[1]) {\n  %a = relu(%x)\n", 2, 15, "unexpected end of input"),
    ("graph g(%x: f32[1]) {\n  %a = relu(%x) $\n  return %a\n}\n", 2, 17, "unexpected character '$'"),
    ("graph g(%x: q32[1]) {\n  return %x\n}\n", 1, 13, "unknown dtype 'q32'"),
    ("graph g(%x: f32[1]) {\n  %a = relu(%x)\n  %a = relu(%x)\n  return %a\n}\n", 3, 3, "%a is defined twice"),
    ("graph g(%x: f32[1]) {\n  %a = f(%x) {k=1, k=2}\n  return %a\n}\n", 2, None, "given twice"),
    ("graph g(%x: f32[1]) {\n  %a = f(%x) {k=choice(1, 1)}\n  return %a\n}\n", 2, None, "duplicate option"),
])
def test_parse_errors_have_positions(text, line, col, fragment):
    with pytest.raises(ParseError) as info:
        parse_graph(text, "g.ir")
    err = info.value
    assert err.file == "g.ir" and err.line == line and fragment in err.message
    if col is not None:
        assert err.column == col
    assert str(err).startswith(f"g.ir:{line}:")


def test_cli_syntax_error_is_one_line(tmp_path, cli):
    bad = tmp_path / "bad.ir"
    bad.write_text("graph g(%x: f32[1,3,8,8]) {\n  %a = relu(%x\n  return %a\n}\n")
    line = assert_one_line_error(cli("show", bad), f"{bad}:3:3:")
    assert "unexpected 'return'" in line


@pytest.mark.parametrize("doc, fragment", [
    ({"format": "autonl-ir", "version": 1, "name": "g", "inputs": [], "nodes": [], "outputs": []},
     "outputs: [] should be non-empty"),
    ({"format": "autonl-ir", "version": 2, "name": "g", "inputs": [], "nodes": [], "outputs": ["x"]},
     "schema version 2 is not supported"),
    ({"format": "autonl-ir", "version": 1, "name": "g", "inputs": [],
      "nodes": [{"name": "a", "op": "relu", "inputs": [], "attrs": {"k": {"choice": [1]}}}], "outputs": ["a"]},
     "nodes/0/attrs/k"),
    ([1, 2], "(top level)"),
])
def test_json_schema_errors(doc, fragment):
    with pytest.raises(ParseError) as info:
        from_json(json.dumps(doc), "g.json")
    assert fragment in str(info.value) and str(info.value).startswith("g.json")


def test_json_syntax_error_has_position():
    with pytest.raises(ParseError) as info:
        from_json('{"format": "autonl-ir",\n "version": }', "g.json")
    assert str(info.value).startswith("g.json:2:")
