"""Property-based fuzzing of the graph loaders: any input either loads (parse, type
inference, verification, as `autonl show FILE` does) or gets an AutonlError (one clean
line at the CLI), never another exception."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonl.ir import AutonlError, build_preset, from_json, parse_graph, print_graph, to_json, verify
from autonl.ir.verify import infer_types

from helpers import graphs

SEED_TEXT = print_graph(build_preset("autonl-s", resolution=32))
SEED_JSON = to_json(build_preset("autonl-s", resolution=32))
TOKENS = ["%", "(", ")", "{", "}", "[", "]", ",", "=", ":", "->", "#", '"', "choice(", "graph", "return",
          "f32", "1e309", "-1", "0", "true", "mbconv", "lightnl", "conv2d", "\n", " ", "\x00", "é", "nan"]


def load(parse, text: str) -> None:
    """Parse, infer types and verify, as `autonl show FILE` does; only AutonlError may escape."""
    try:
        g = parse(text)
        infer_types(g, only_missing=True)
        verify(g)
    except AutonlError:
        pass


def load_text(text: str) -> None:
    load(parse_graph, text)


def load_json(text: str) -> None:
    load(from_json, text)


@st.composite
def mutated(draw, seed: str):
    """A valid file with a few edits: characters or tokens inserted, deleted or replaced."""
    text = seed
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        new = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)))
        text = text[:i] + new + text[j:]
    return text


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300))
def test_text_parser_on_arbitrary_text(text):
    load_text(text)


@FUZZ
@given(mutated(SEED_TEXT))
def test_text_parser_on_edited_graphs(text):
    load_text(text)


@FUZZ
@given(graphs())
def test_text_loader_on_generated_graphs_with_unknown_ops_and_attributes(g):
    load_text(print_graph(g))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)


@FUZZ
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_json_loader_on_arbitrary_input(text):
    load_json(text)


@st.composite
def edited_json(draw):
    """The JSON form of a valid graph with one value anywhere replaced by another JSON value."""
    doc = json.loads(SEED_JSON)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(doc, [])
    path = draw(st.sampled_from(paths[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = draw(json_values)
    return json.dumps(doc)


@FUZZ
@given(st.one_of(edited_json(), mutated(SEED_JSON)))
def test_json_loader_on_edited_graphs(text):
    load_json(text)
