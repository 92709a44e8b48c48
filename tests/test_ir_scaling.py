"""The IR loader scales (issue #22): loading, inference, verification, cost and printing do work
linear in the node count, and no input nests deep enough to reach Python's recursion limit.

No test here is timed (speed goals live in benchmarks/ir_scaling.py). Work is counted instead:
the Python and C function calls made while a graph of N and of 2N nodes is handled, whose
ratio is about 2 for linear work and about 4 for quadratic work. The graphs are shaped where
the loader used to be quadratic: many graph inputs (networkx's find_cycle walked the whole
graph again from each input) and many outputs (live_nodes asked networkx for the ancestors of
each output).
"""
import json
import random
import sys

import networkx as nx
import pytest

from autonl.ir import (AutonlError, Graph, Node, ParseError, TensorType, from_json, load_graph, parse_graph,
                       print_graph)
from autonl.ir.json_form import graph_from_dict
from autonl.ir.text_form import MAX_NESTING, parse_attrs
from autonl.passes import analyze_cost

from helpers import assert_one_line_error

DEEP = 20000  # far past the recursion limit


# -- inputs ----------------------------------------------------------------------------
def residual_chain(n: int) -> str:
    """conv2d -> batch_norm -> relu -> add(relu, block input), typed, in the text form."""
    t = "f32[1,8,4,4]"
    lines, prev = [f"graph chain(%x: {t}) -> {t} {{"], "x"
    for k in range(n // 4):
        lines += [f"  %c{k} : {t} = conv2d(%{prev}) {{out=8, k=3}}",
                  f"  %b{k} : {t} = batch_norm(%c{k}) {{eps=0.001}}",
                  f"  %r{k} : {t} = relu(%b{k})",
                  f"  %a{k} : {t} = add(%r{k}, %{prev})"]
        prev = f"a{k}"
    return "\n".join(lines + [f"  return %{prev}", "}"]) + "\n"


def many_inputs(n: int) -> str:
    """A chain of adds that reads a new graph input at each step (n/2 inputs), untyped."""
    k = n // 2
    params = ", ".join(f"%i{j}: f32[1,4]" for j in range(k))
    lines = [f"graph wide({params}) {{", "  %a0 = relu(%i0)"]
    lines += [f"  %a{j} = add(%a{j - 1}, %i{j})" for j in range(1, k)]
    return "\n".join(lines + [f"  return %a{k - 1}", "}"]) + "\n"


def to_json_text(text: str) -> str:
    from autonl.ir import to_json
    return to_json(parse_graph(text))


def calls_during(fn) -> int:
    """How many Python and C function calls ``fn()`` makes: a measure of work that is the same
    on every run and machine (a C call that scans a whole container counts once, see below)."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call" or event == "c_call":
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def load_cost_print(path):
    def run():
        graph = load_graph(path)
        analyze_cost(graph)
        print_graph(graph)
    return run


# -- work linear in the node count ----------------------------------------------------------
@pytest.mark.parametrize("shape", [residual_chain, many_inputs])
@pytest.mark.parametrize("form", ["text", "json"])
def test_load_cost_and_print_do_linear_work(tmp_path, shape, form):
    counts = []
    for n in (400, 800):
        text = shape(n)
        path = tmp_path / (f"g{n}.json" if form == "json" else f"g{n}.ir")
        path.write_text(to_json_text(text) if form == "json" else text)
        load_cost_print(path)()  # warm up caches (schema, lru caches) outside the count
        counts.append(calls_during(load_cost_print(path)))
    assert counts[1] <= 2.2 * counts[0], \
        f"{shape.__name__}: {counts[0]} calls for 400 nodes, {counts[1]} for 800"


def test_dead_code_walk_is_linear_with_many_outputs():
    def graph(n: int) -> Graph:
        nodes = [Node("a0", "relu", ["x"])] + [Node(f"a{j}", "relu", [f"a{j - 1}"]) for j in range(1, n)]
        return Graph("g", {"x": TensorType("f32", (1, 4))}, nodes, [f"a{j}" for j in range(0, n, 2)])

    counts = [calls_during(graph(n).live_nodes) for n in (400, 800)]
    assert counts[1] <= 2.2 * counts[0], counts


def count_table_scans(monkeypatch) -> list[int]:
    """From now until ``monkeypatch`` is undone, ``[n]``: the whole-node-table scans so far."""
    from autonl.ir.graph import _NodeTable

    scans = [0]

    def counting(method):
        def wrapper(self, *args):
            scans[0] += 1
            return method(self, *args)
        return wrapper

    for name in ("__iter__", "keys", "values", "items"):
        monkeypatch.setattr(_NodeTable, name, counting(getattr(dict, name)))
    return scans


def test_node_table_is_scanned_a_constant_number_of_times(tmp_path, monkeypatch):
    """No per-node `list(graph.nodes)`, `graph.nodes.values()` or `for n in graph` hides inside
    one C call: the whole-table scans while loading, costing and printing do not grow with N."""
    scans = count_table_scans(monkeypatch)
    counts = []
    for n in (400, 800):
        path = tmp_path / f"g{n}.ir"
        path.write_text(residual_chain(n))
        scans[0] = 0
        load_cost_print(path)()
        counts.append(scans[0])
    assert counts[0] == counts[1] and counts[0] < 40, counts


def test_lowering_composites_scans_the_node_table_a_constant_number_of_times(monkeypatch):
    """`lower-composites` splices every composite of a round in one pass over the node order:
    the whole-table scans do not grow with the number of composites (a splice each made
    `autonl opt -p lower-composites` quadratic: 8k nodes took 63 s)."""
    from autonl.ir import parse_graph
    from autonl.passes import PassManager

    def chain(blocks):
        lines = [f"  %m{i} = mbconv(%{'x' if i == 0 else f'm{i - 1}'}) {{out=8, e=2, k=3}}" for i in range(blocks)]
        return parse_graph("graph chain(%x: f32[1,8,8,8]) {\n" + "\n".join(lines) + f"\n  return %m{blocks - 1}\n}}\n")

    counts, sizes = [], []
    for blocks in (20, 40):
        g = chain(blocks)
        scans = count_table_scans(monkeypatch)
        lowered = PassManager(["shape-inference", "lower-composites"], verify_each=False)(g).graph
        counts.append(scans[0])
        monkeypatch.undo()
        sizes.append(len(lowered.nodes))
        assert not any(n.op == "mbconv" for n in lowered)
    assert sizes[1] > sizes[0] and counts[0] == counts[1], (counts, sizes)


# -- topology without networkx agrees with networkx -----------------------------------------
def random_graph(rng: random.Random, n: int, cyclic: bool) -> Graph:
    """Nodes stored in a shuffled order, fan-in 1-2, some inputs read twice; one back edge if cyclic."""
    names = [f"v{j}" for j in range(n)]
    nodes = []
    for j, name in enumerate(names):
        pool = ["x", "y"] + names[:j]
        inputs = [rng.choice(pool) for _ in range(rng.randint(1, 2))]
        if cyclic and j == n // 2:
            inputs.append(names[rng.randint(j, n - 1)])
        nodes.append(Node(name, "add" if len(inputs) == 2 else "relu", inputs))
    rng.shuffle(nodes)
    t = TensorType("f32", (1, 4))
    return Graph("g", {"x": t, "y": t}, nodes, [names[-1], names[n // 3]])


@pytest.mark.parametrize("seed", range(20))
def test_topology_agrees_with_networkx(seed):
    rng = random.Random(seed)
    g = random_graph(rng, rng.randint(1, 60), cyclic=seed % 4 == 3)
    h = g.to_networkx()
    pos = {v: i for i, v in enumerate([*g.inputs, *g.nodes])}
    try:
        expected = [v for v in nx.lexicographical_topological_sort(h, key=pos.__getitem__) if v in g.nodes]
    except nx.NetworkXUnfeasible:
        expected = None
    if expected is None:
        assert g.find_cycle() == [e[0] for e in nx.find_cycle(h)]
        with pytest.raises(AutonlError, match="is part of a cycle"):
            g.topological_order()
    else:
        assert g.find_cycle() is None
        assert g.topological_order() == expected
    live = set()
    for out in g.outputs:
        live |= {out} | nx.ancestors(h, out)
    assert g.live_nodes() == live & set(g.nodes)


# -- no recursion on user-controlled depth ---------------------------------------------------
def deep_text(depth: int) -> str:
    value = "[" * depth + "1" + "]" * depth
    return "graph g(%x: f32[1,4]) -> f32[1,4] {\n  %y = relu(%x) {a=" + value + "}\n  return %y\n}\n"


def deep_json(depth: int) -> str:
    return ('{"format": "autonl-ir", "version": 1, "name": "g", "inputs": [{"name": "x", "type": '
            '{"dtype": "f32", "shape": [1, 4]}}],\n "nodes": [{"name": "y", "op": "relu", "inputs": ["x"], '
            '"attrs": {"a": ' + "[" * depth + "1" + "]" * depth + '}}], "outputs": ["y"]}\n')


def test_deeply_nested_text_is_one_error_line(tmp_path, cli):
    path = tmp_path / "deep.ir"
    path.write_text(deep_text(DEEP))
    assert_one_line_error(cli("show", path, "--cost"), f"{path}:2:18:", f"nested deeper than {MAX_NESTING}")


def test_deeply_nested_json_is_one_error_line(tmp_path, cli):
    path = tmp_path / "deep.json"
    path.write_text(deep_json(DEEP))
    assert_one_line_error(cli("show", path, "--cost"), f"{path}:2:", f"nested deeper than {MAX_NESTING}")


@pytest.mark.parametrize("value, col", [
    ("[" * DEEP + "1" + "]" * DEEP, 18),                       # a list: at the attribute's name
    ("choice(" + "[" * DEEP + "1" + "]" * DEEP + ", 2)", 20),  # a choice option: at the choice
    ("choice(1, " + "[" * DEEP + "1" + "]" * DEEP + ")", 20),
    ("[" * DEEP + "choice(1, 2)" + "]" * DEEP, 18),            # a choice deep in lists
])
def test_deep_attribute_values_are_parse_errors(value, col):
    with pytest.raises(ParseError) as info:
        parse_graph("graph g(%x: f32[1,4]) {\n  %y = relu(%x) {a=" + value + "}\n  return %y\n}\n", "g.ir")
    assert (info.value.line, info.value.column) == (2, col)
    assert f"nested deeper than {MAX_NESTING} levels" in info.value.message


def test_nesting_up_to_the_cap_is_accepted():
    ok = "[" * MAX_NESTING + "1" + "]" * MAX_NESTING
    assert parse_attrs("{a=" + ok + "}")["a"] == json.loads(ok)
    with pytest.raises(ParseError, match="nested deeper than"):
        parse_attrs("{a=[" + ok + "]}")
    # a syntax error after a deep value is still a syntax error, at its position
    text = "{a=" + "[" * DEEP + "1" + "]" * DEEP + ", b=}"
    with pytest.raises(ParseError, match="unexpected '}'") as info:
        parse_attrs(text, "o")
    assert info.value.column == text.index("b=}") + 3


@pytest.mark.parametrize("depth", [990, DEEP])  # the schema's message recurses; json.loads does
def test_deep_json_documents_are_parse_errors(depth):
    with pytest.raises(ParseError, match=f"nested deeper than {MAX_NESTING} levels") as info:
        from_json(deep_json(depth), "g.json")
    assert str(info.value).startswith("g.json:2:")


def test_deep_json_objects_are_parse_errors():
    value: list = []
    for _ in range(DEEP):  # built without recursion, deeper than json.loads could read
        value = [value]
    doc = {"format": "autonl-ir", "version": 1, "name": "g", "inputs": value, "nodes": [], "outputs": ["x"]}
    with pytest.raises(ParseError, match="nested too deeply"):
        graph_from_dict(doc, "g.json")
