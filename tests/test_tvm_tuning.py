"""How tuning spends its budget (allocation by share of the time) and `autonl tune-space`:
one database for a search space that every derived network compiles against with no new
trials."""
import json
import random


from autonl.backends.loading import deploy_model, load_model_or_graph
from autonl.backends.onnx.export import export_onnx
from autonl.backends.tvm import get_target
from autonl.backends.tvm.compile import pre_tuning, to_relax
from autonl.backends.tvm.schedule import allocate
from autonl.backends.tvm.space import space_graphs, windows
from autonl.backends.tvm.tuning import tune
from autonl.ir import load_graph
from autonl.passes import PassManager, SearchSpace, search_space_pipeline

from helpers import assert_one_line_error
from helpers import space_ir, space_toml


def test_allocation_follows_the_shares_in_whole_batches():
    assert allocate([0.9, 0.05, 0.05], 100, 10) == [80, 10, 10]
    assert allocate([1.0, 0.0, 0.0, 0.0], 64, 16) == [16] * 4       # a batch each, even at no share
    assert allocate([0.5, 0.5], 10, 16) == [16, 16]                 # the batch is the floor
    capped = allocate([0.8, 0.1, 0.1], 600, 10, cap=300)
    assert capped[0] == 300 and sum(capped) <= 600 and capped[1] == capped[2] > 10   # the cap's excess shared
    for shares in ([0.3, 0.3, 0.4], [0.01] * 7 + [0.93]):
        a = allocate(shares, 400, 8)
        assert sum(a) <= 400 and all(x >= 8 and x % 8 == 0 for x in a)
        assert a[-1] == max(a)


def _space(tmp_path, res=32, lightnl_nodes=None):
    (tmp_path / "tiny.ir").write_text(space_ir(res))
    (tmp_path / "small.toml").write_text(space_toml(lightnl_nodes=lightnl_nodes))
    return PassManager(list(search_space_pipeline(str(tmp_path / "small.toml"))))(
        load_graph(tmp_path / "tiny.ir")).graph


def _mod(graph, target):
    model = load_model_or_graph(graph, 0)
    mod, _ = to_relax(export_onnx(deploy_model(model)), list(graph.inputs[next(iter(graph.inputs))].shape), "nhwc",
                      weights=False)
    return pre_tuning(mod, target, True)       # as tune-space and a tuned compile lower it


def test_windows_cut_the_space_between_blocks(tmp_path):
    graph = _space(tmp_path)
    pieces = windows(graph)
    relaxed = [n.name for n in graph if n.relaxed]
    assert sorted(n.name for w in pieces for n in w if n.relaxed) == sorted(relaxed)   # each relaxed node once
    assert all(len(w.inputs) == 1 for w in pieces)
    graphs = space_graphs(graph)
    assert sum(1 for k in graphs if k.startswith("sub-network")) == 2
    assert all(not g.relaxed for g in graphs.values())


def test_tune_space_covers_every_derived_network(cli, tmp_path):
    """A space of 8 networks (LightNL after the last block or not, its kernel, its skip: one
    window of three relaxed nodes whose every combination is tuned) proves coverage as well as
    the 32 of test_windows' space did, at a quarter of the compile time."""
    import tvm
    graph = _space(tmp_path, lightnl_nodes="mbconv_2")
    db = tmp_path / "db"
    proc = cli("tune-space", str(tmp_path / "tiny.ir"), "--space", str(tmp_path / "small.toml"),
               "--tune-trials", "1", "--out", str(db), timeout=900)
    assert proc.returncode == 0, proc.stderr
    n = int(proc.stdout.split(" distinct workloads")[0].split()[-1])
    assert f"covers {n} of them" in proc.stdout
    plan = json.loads((db / "tuning_plan.json").read_text())
    assert len(plan["tasks"]) == n and plan["cost"] == "untuned time"
    # every network of the space (all 8 here) finds every one of its kernels in the database
    target = tvm.target.Target(get_target("host").target_dict())
    space = SearchSpace(graph)
    nets = [space.freeze(d) for d in space.grid()]
    assert len(nets) == space.size() == 8
    info = tune([_mod(g, target) for g in nets], target, str(db), 0)
    assert info["tasks_covered"] == info["tasks"] and info["trials_run"] == 0
    # and `autonl compile --tuning-dir` says so, with no new trials
    derived = tmp_path / "derived.ir"
    from autonl.ir import render
    derived.write_text(render(space.freeze(space.random(random.Random(3))), "text"))
    proc = cli("compile", str(derived), "--backend", "tvm", "--tuning-dir", str(db), "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    t = manifest["tuning"]
    assert t["trials_run"] == 0 and t["tasks_covered"] == t["tasks"] and manifest["tuned"]
    assert f"covers {t['tasks']} of the {t['tasks']} tasks" in proc.stderr
    assert manifest["checks"]["vs_torch_max_abs_diff"] <= 1e-4


def test_tune_space_bad_input_is_one_line(cli, tmp_path):
    _space(tmp_path)
    base = ["tune-space", str(tmp_path / "tiny.ir"), "--space", str(tmp_path / "small.toml")]
    assert_one_line_error(cli(*base, "--out", str(tmp_path / "db")), "budget")
    assert_one_line_error(cli(*base, "--tune-trials", "1", "--target", "nosuch", "--out", str(tmp_path / "db")),
                          "nosuch")
    assert_one_line_error(cli(*base, "--resume", "--out", str(tmp_path / "db")), "nothing to resume")
    assert_one_line_error(cli(*base, "--tune-trials", "1", "--out", str(tmp_path / "no" / "db")), "does not exist")
    assert not (tmp_path / "db").exists()
    g = tmp_path / "plain.ir"
    from helpers import TINY_IR
    g.write_text(TINY_IR)
    assert_one_line_error(cli("tune-space", str(g), "--space", "none", "--tune-trials", "1", "--out",
                              str(tmp_path / "db")), "")


def test_layouts_nhwc_by_default_nchw_on_request(cli, tmp_path):
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    graph = _space(tmp_path)
    net = space_graphs(graph)["sub-network 0"]
    target = tvm.target.Target(get_target("host").target_dict())
    model = load_model_or_graph(net, 0)
    res = int(net.inputs[next(iter(net.inputs))].shape[-1])
    onnx_model = export_onnx(deploy_model(model))

    def stem_input(layout):
        mod, params = to_relax(onnx_model, [1, 3, res, res], layout)
        assert not any("transform" in gv.name_hint for gv in mod.get_global_vars())   # weights laid out already
        tasks = ms.relax_integration.extract_tasks(pre_tuning(mod, target, True), target)
        # no weight transposes to tune (they would be one per convolution): the few left move activations
        convs_n = sum("conv2d" in t.task_name for t in tasks)
        assert sum(t.task_name.startswith("transpose") for t in tasks) < convs_n / 2
        convs = [t.dispatched[0] for t in tasks if "conv2d" in t.task_name]
        # the stem's convolution: the one whose data buffer has the 3 input channels
        shapes = [[int(d) for d in ArgInfo.from_entry_func(m, remove_preproc=True)[0].shape] for m in convs]
        return next(s for s in shapes if 3 in s[1:2] + s[3:4])

    assert stem_input("nchw") == [1, 3, res, res]
    assert stem_input("nhwc") == [1, res, res, 3]
    from autonl.ir import render
    (tmp_path / "net.ir").write_text(render(net, "text"))
    assert_one_line_error(cli("compile", str(tmp_path / "net.ir"), "--backend", "tvm", "--layout", "nchwc",
                              "--out", str(tmp_path / "c")), "layout")
    assert not (tmp_path / "c").exists()
