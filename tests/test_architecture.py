"""The shape of the code: layers one way (import-linter), no import cycle, small modules, the IR
without torch, every op covered by every backend, the registries and the pass contract."""
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

from autonl.ir import AutonlError, DuplicateNameError, Graph, Registry, UnknownNameError, build_preset
from autonl.ir.ops import OPS
from autonl.passes import Pass, PassError, PassManager, PassResult, register_pass

from helpers import assert_one_line_error

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"autonl_ir": "autonl.ir", "passes": "autonl.passes", "backends": "autonl.backends",
            "workflows": "autonl.workflows", "cli": "autonl.cli"}


def test_import_linter_contracts_are_kept():
    """cli > workflows > backends > passes > ir, the CLI imports from the backends only what builds its flags,
    the torch backend's rooms search > train > data | lower | importer, and neither the IR nor the passes
    import torch or a runtime (the contracts are in pyproject.toml)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "5 kept" in proc.stdout


def test_no_import_cycle_between_modules():
    import grimp

    graph = grimp.build_graph(*PACKAGES.values(), exclude_type_checking_imports=True)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, cycles


def _sources():
    return [p for folder in (*PACKAGES, "benchmarks", "scripts") for p in (REPO / folder).rglob("*.py")]


def test_no_source_file_over_600_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in _sources()}
    assert sizes and not {k: v for k, v in sizes.items() if v > 600}


def test_no_function_over_80_lines_outside_the_tests():
    import ast

    long = {}
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long[f"{p.relative_to(REPO)}:{node.name}"] = length
    assert not long, long


def test_the_ir_imports_and_works_without_torch():
    code = textwrap.dedent("""
        import sys
        for name in ("torch", "onnx", "onnxruntime", "tvm"):
            sys.modules[name] = None          # any import of them now raises ImportError
        import autonl.ir
        from autonl.ir import build_preset, parse_graph, print_graph, verify
        g = build_preset("autonl-s", resolution=64)
        verify(g)
        assert parse_graph(print_graph(g)) == g
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m])
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_ir_lists_the_same_presets_whatever_was_imported():
    # the search-space preset is made by a pass pipeline; the IR lists it without the passes
    # and says what building it needs, rather than answering differently by import order
    code = textwrap.dedent("""
        import autonl.ir
        from autonl.ir import AutonlError, all_presets, build_preset
        before = sorted(all_presets())
        try:
            build_preset("search-space", resolution=32)
        except AutonlError as e:
            print("refused:", e)
        import autonl.passes
        assert sorted(all_presets()) == before and "search-space" in before, before
        print(len(build_preset("search-space", resolution=32)) > 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("refused: preset 'search-space' is made by the 'search-space' pass pipeline")
    assert lines[1] == "True"


def test_every_op_has_a_torch_lowering_and_every_primitive_an_onnx_emitter():
    from autonl.backends.onnx.export import ONNX_EMITTERS
    from autonl.backends.torch.lower import TORCH_LOWERINGS
    from autonl.backends.torch.search.supernet import SUPERNET_LOWERINGS

    ops = set(OPS.names())
    assert ops - set(TORCH_LOWERINGS.names()) == set()
    primitives = {n for n, op in OPS.items() if not op.composite}
    assert primitives - set(ONNX_EMITTERS.names()) == set()
    assert set(TORCH_LOWERINGS.names()) <= ops and set(ONNX_EMITTERS.names()) <= ops
    for name, spec in SUPERNET_LOWERINGS.items():      # what the supernet searches are real attributes
        assert name in ops and set(spec.searchable) <= set(OPS.get(name).attrs), name


def test_registry_refuses_duplicates_and_names_candidates():
    r = Registry("widget")
    r.register("conv", 1)
    with pytest.raises(DuplicateNameError, match="widget 'conv' is already registered"):
        r.register("conv", 2)
    with pytest.raises(UnknownNameError, match="unknown widget 'cnv'; did you mean 'conv'\\? known widgets: conv"):
        r.get("cnv")
    assert r.names() == ["conv"] and "conv" in r and len(r) == 1


class RaisesKeyError(Pass):
    def call(self, graph):
        return PassResult(graph, {}["missing"])


class ReturnsNewGraph(Pass):
    in_place = True

    def call(self, graph):
        return PassResult(graph.copy(), False)


class ReturnsSameGraph(Pass):
    in_place = False

    def call(self, graph):
        return PassResult(graph, False)


register_pass("test-raises-keyerror")(RaisesKeyError)


def test_any_exception_in_a_pass_names_the_pass_and_its_position(capsys):
    from autonl.cli.main import main

    with pytest.raises(PassError, match=r"pass 'test-raises-keyerror' \(2 of 3\) failed: KeyError: 'missing'"):
        PassManager(["dce", "test-raises-keyerror", "dce"])(build_preset("mobilenetv2", resolution=32))
    assert main(["opt", "mobilenetv2", "-r", "32", "-p", "dce", "-p", "test-raises-keyerror"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pass 'test-raises-keyerror' (2 of 2) failed: KeyError: 'missing'"]


def test_the_in_place_contract_is_checked():
    g = build_preset("mobilenetv2", resolution=32)
    with pytest.raises(PassError, match="declared in place but returned a new graph"):
        PassManager([ReturnsNewGraph()])(g)
    with pytest.raises(PassError, match="declared functional but returned the graph it was given"):
        PassManager([ReturnsSameGraph()])(g)


def test_modified_only_when_something_changed():
    from autonl.passes.derive import Derive

    g = build_preset("autonl-s", resolution=32)
    assert not PassManager(["dce", "shape-inference"])(g).modified
    assert not Derive({})(g).modified                 # a discrete graph with nothing to decide
    space = build_preset("search-space", resolution=32)
    from autonl.passes import SearchSpace
    assert Derive(SearchSpace(space).default())(space).modified


@pytest.mark.parametrize("args, fragment", [
    (["--backend", "tvm", "--int8"], "--int8 applies to the onnx backend, not to tvm"),
    (["--backend", "onnx", "--target", "rpi4"], "--target applies to the tvm backend, not to onnx"),
    (["--backend", "onnx", "--tune-trials", "4"], "--tune-trials applies to the tvm backend, not to onnx"),
    (["--backend", "tvm", "--calib-data", "digits"], "--calib-data applies to the onnx backend, not to tvm"),
])
def test_an_option_of_another_backend_is_refused(cli, tmp_path, args, fragment):
    out = tmp_path / "D"
    assert_one_line_error(cli("compile", "autonl-s", *args, "--out", str(out)), fragment)
    assert not out.exists()


def test_editing_api_keeps_users_and_refuses_erasing_a_used_node():
    g = build_preset("mobilenetv2", resolution=32)
    users = {n.name for n in g.users("stem_act")}
    assert users == {n.name for n in g if "stem_act" in n.inputs} and users
    with pytest.raises(AutonlError, match="cannot remove %stem: it is still used by %stem_bn"):
        g.erase_node("stem")
    g.replace_all_uses_with("stem_bn", "stem")
    assert g.users("stem_bn") == [] and g.node("stem_act").inputs == ["stem"]
    g.erase_node("stem_bn")
    assert [n.name for n in g.users("stem")] == ["stem_act"]
    with pytest.raises(TypeError, match="cannot be edited in place"):
        g.node("stem_act").inputs.append("x")
    again = pickle.loads(pickle.dumps(g))           # the users index is rebuilt, not pickled
    assert again == g and isinstance(again, Graph) and [n.name for n in again.users("stem")] == ["stem_act"]


def test_a_plugin_that_shadows_a_built_in_pass_is_refused(tmp_path):
    (tmp_path / "autonl_shadow_plugin.py").write_text(
        "from autonl.passes import Pass, PassResult\n\n"
        "class NotDce(Pass):\n    def call(self, graph):\n        return PassResult(graph, False)\n")
    dist = tmp_path / "autonl_shadow_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: autonl-shadow-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[autonl.passes]\ndce = autonl_shadow_plugin:NotDce\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from autonl.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "passes"], capture_output=True, text=True)
    assert_one_line_error(proc, "pass plugin 'dce'", "shadows the pass of that name", "autonl.passes.dce")
