"""Text and JSON forms: exact round trips (presets and hypothesis-generated graphs), errors."""
import json

import pytest
from hypothesis import HealthCheck, given, settings

from autonl.ir import ParseError, all_presets, build_preset, from_json, parse_graph, print_graph, to_json
from autonl.passes import PassManager

from helpers import assert_one_line_error, graphs


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


@pytest.mark.parametrize("preset", sorted(all_presets()))
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
