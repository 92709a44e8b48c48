"""Latency tables (autonl latency-table / latency-check / bench) and the search toward a latency
target, on a tiny space at 32x32 with few timing rounds: what is checked here is the shape of
the path (every entry, provenance, exact gate-product cost, refusals), not the figures, which
come from benchmarks/latency_landing.py."""
import json
import random
import statistics
import time

import pytest
import torch

from autonl.backends.latency import LatencyTable
from autonl.backends.torch.search.supernet import Supernet
from autonl.ir import load_graph
from autonl.ir.choice import attr_combinations
from autonl.passes import PassManager, SearchSpace, search_space_pipeline

from conftest import free_port, rpc_server_on_loopback
from helpers import TINY_IR, assert_one_line_error, space_ir, space_toml

# fewer blocks for the TVM tables (each block is a TVM build): LightNL present or not, and the
# kernel of the last block or its skip
SMALL_SPACE = space_toml()

FAST = ["--threads", "1", "--rounds", "2"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    folder = tmp_path_factory.mktemp("latency")
    (folder / "tiny.ir").write_text(space_ir(32))
    (folder / "small.toml").write_text(SMALL_SPACE)
    return folder


@pytest.fixture(scope="module")
def table(space):
    import subprocess

    from conftest import autonl_exe
    out = space / "table.json"
    subprocess.run([autonl_exe(), "latency-table", str(space / "tiny.ir"), *FAST, "--calibration", "2",
                    "--out", str(out)], check=True, capture_output=True)
    return out


def relaxed(path) -> "Graph":  # noqa: F821
    return PassManager(list(search_space_pipeline("autonl")))(load_graph(path)).graph


def test_the_table_has_every_combination_of_every_searchable_node_and_its_provenance(space, table):
    doc = json.loads(table.read_text())
    graph = relaxed(space / "tiny.ir")
    searchable = [n for n in graph if n.relaxed]
    assert set(doc["nodes"]) == {n.name for n in searchable}
    for node in searchable:
        row = doc["nodes"][node.name]
        combos = list(attr_combinations(node.attrs))
        assert len(row["entries"]) == len(combos)
        assert row["input"] == list(graph.type_of(node.inputs[0]).shape)
        for e in row["entries"]:
            gone = e["options"].get("skip") is True or e["options"].get("insert") is False
            assert (e["ms"] == 0) == gone, e
            assert gone or (e["runs"] > 0 and e["p10_ms"] <= e["p90_ms"])
    prov = doc["provenance"]
    for key in ("backend", "runtime", "runtime_version", "target", "cpu", "threads", "resolution", "space_hash",
                "date", "effort", "blocks_measured"):
        assert key in prov, key
    assert prov["backend"] == "onnx" and prov["threads"] == 1 and doc["resolution"] == 32
    # identical blocks are timed once: lightnl_1 and lightnl_2 read the same shape
    assert prov["blocks_measured"] < sum(len(doc["nodes"][n.name]["entries"]) for n in searchable)
    # two calibration networks: the space's smallest and largest; too few for a line (scale 1)
    assert [r["network"] for r in doc["fixed"]["calibration"]] == ["smallest", "largest"]
    assert doc["fixed"]["scale"] == 1.0
    for row in doc["nodes"].values():
        for e in row["entries"]:
            assert e["ms"] == pytest.approx(doc["fixed"]["scale"] * e["measured_ms"])
            if e["runs"]:       # measured: the block with its context less the context alone
                assert e["measured_ms"] == max(e["with_context_ms"] - e["context_ms"], 0.01 * e["with_context_ms"])
    lo, hi = LatencyTable.read(table).bounds(graph)
    assert 0 < lo < hi


def test_calibration_networks_span_the_space_and_the_context_line_is_fitted_through_them(space):
    from autonl.backends.latency.measure import calibration_decisions, fit_context
    from autonl.passes import analyze_cost

    graph = relaxed(space / "tiny.ir")
    space_ = SearchSpace(graph)
    picked = calibration_decisions(graph, 5, seed=3)
    assert list(picked)[:2] == ["smallest", "largest"] and len(picked) == 5
    macs = {name: analyze_cost(space_.freeze(d)).macs for name, d in picked.items()}
    others = [analyze_cost(space_.freeze(space_.random(i))).macs for i in range(30)]
    assert macs["smallest"] <= min(others) and macs["largest"] >= max(others)
    between = [macs[n] for n in list(picked)[2:]]
    assert between == sorted(between) and len(set(between)) == 3      # spread, in order
    assert list(calibration_decisions(graph, 1, seed=3)) == ["random 0"]
    # a line through the rows: recovered exactly from clean rows, scale 1 when there are too few
    rows = [{"blocks_ms": b, "measured_ms": 0.4 + 1.1 * b} for b in (1.0, 2.0, 3.5, 5.0)]
    fixed, scale, how = fit_context(rows)
    assert (fixed, scale) == pytest.approx((0.4, 1.1)) and "Theil-Sen" in how
    # one network off the line does not tilt it
    fixed, scale, _ = fit_context(rows + [{"blocks_ms": 6.0, "measured_ms": 0.4 + 1.1 * 6.0 + 3.0}])
    assert (fixed, scale) == pytest.approx((0.4, 1.1))
    fixed, scale, how = fit_context(rows[:2])
    assert scale == 1.0 and fixed == pytest.approx(statistics.median([0.4 + 0.1 * 1.0, 0.4 + 0.1 * 2.0]))
    # a slope noise made (rows with no trend) falls back to the median offset
    fixed, scale, how = fit_context([{"blocks_ms": b, "measured_ms": m} for b, m in ((1, 9), (2, 1), (3, 1))])
    assert scale == 1.0 and "outside" in how
    # rows measured at 32x32 on a busy machine (a 3-network calibration): Theil-Sen's intercept
    # is negative and the line predicts the smallest network at half its time; refitted through
    # the origin, every network is predicted within 15% and the fixed part is not below 0
    rows = [{"blocks_ms": b, "measured_ms": m} for b, m in ((0.0663, 0.1103), (0.6024, 0.865), (0.3347, 0.4338))]
    fixed, scale, how = fit_context(rows)
    assert fixed == 0.0 and "through the origin" in how and "-0.037" in how
    assert scale == pytest.approx(statistics.median([r["measured_ms"] / r["blocks_ms"] for r in rows]))
    for r in rows:
        assert abs(scale * r["blocks_ms"] / r["measured_ms"] - 1) < 0.15


def test_the_supernet_latency_cost_equals_the_tables_prediction_for_hard_gates(space, table):
    graph = relaxed(space / "tiny.ir")
    t = LatencyTable.read(table)
    supernet = Supernet(graph, latency=t).eval()
    assert supernet.cost_model.bounds() == pytest.approx(t.bounds(graph))
    space_ = SearchSpace(graph)
    rng = random.Random(0)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(8):
        d = space_.random(rng)
        supernet.force(d)
        with torch.no_grad():
            supernet(x)
        assert supernet.cost().item() == pytest.approx(t.predict(graph, d), rel=1e-6, abs=1e-9)
    # and it is differentiable in the gates
    supernet.force(None)
    supernet.train()
    supernet(x)
    supernet.cost().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.arch_parameters())


def test_check_and_bench_measure_whole_networks(space, table, cli, tmp_path):
    proc = cli("latency-check", table, "--samples", "4", "--rounds", "1", "--json", tmp_path / "check.json",
               check_ok=True)
    assert "MAPE" in proc.stdout and "Spearman" in proc.stdout
    check = json.loads((tmp_path / "check.json").read_text())
    for key in ("mape", "spearman", "within_5pct", "within_10pct", "rows"):
        assert key in check
    assert len(check["rows"]) == 4 and all(r["measured_ms"] > 0 for r in check["rows"])
    assert (tmp_path / "check.png").stat().st_size > 1000
    (tmp_path / "other.ir").write_text(TINY_IR)
    proc = cli("bench", space / "tiny.ir", tmp_path / "other.ir", *FAST, "--table", table, "--json",
               tmp_path / "bench.json", check_ok=True)
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [m["source"] for m in bench["models"]] == [str(space / "tiny.ir"), str(tmp_path / "other.ir")]
    assert bench["provenance"]["threads"] == 1 and "table" in bench["scaled_to"]
    for m in bench["models"]:
        assert m["ms"] > 0 and m["runs"] > 0 and m["p10_ms"] <= m["p90_ms"]
    assert_one_line_error(cli("bench", space / "tiny.ir", "--threads", "2", "--table", table), "--threads 1")


def test_search_toward_a_latency_target_reports_predicted_latency(space, table, cli, tmp_path):
    t = LatencyTable.read(table)
    lo, hi = t.bounds(relaxed(space / "tiny.ir"))
    target = lo + 0.5 * (hi - lo)
    run = tmp_path / "run"
    cli("search", space / "tiny.ir", "--target-latency", f"{target:.4f}ms", "--latency-table", table,
        "--data", "digits", "--steps", "6", "--warmup-steps", "2", "--batch-size", "16", "--train-size", "64",
        "--val-size", "32", "--workers", "0", "--out", run, check_ok=True)
    result = json.loads((run / "result.json").read_text())
    assert result["target_latency_ms"] == pytest.approx(target, rel=1e-3)
    decisions = json.loads((run / "decisions.json").read_text())
    assert result["predicted_latency_ms"] == pytest.approx(t.predict(relaxed(space / "tiny.ir"), decisions))
    assert (run / "latency.png").exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("latency_ms" in m for m in metrics)
    cli("derive", run, "--out", tmp_path / "model", check_ok=True)
    cost = json.loads((tmp_path / "model" / "cost.json").read_text())
    assert cost["predicted_latency_ms"] == pytest.approx(result["predicted_latency_ms"])


def test_bad_latency_input_gets_one_line_and_writes_nothing(space, table, cli, tmp_path):
    t = LatencyTable.read(table)
    lo, hi = t.bounds(relaxed(space / "tiny.ir"))
    search = ["search", space / "tiny.ir", "--data", "digits", "--steps", "4", "--warmup-steps", "1",
              "--workers", "0", "--out", tmp_path / "run"]
    assert_one_line_error(cli(*search, "--target-latency", f"{lo * 0.5:.5f}ms", "--latency-table", table),
                          "below the reach", "fastest", "slowest")
    assert_one_line_error(cli(*search, "--target-latency", f"{hi * 2:.4f}ms", "--latency-table", table),
                          "above the reach", "fastest", "slowest")
    assert_one_line_error(cli(*search, "--target-latency", "1ms", "--target-macs", "1M", "--latency-table", table),
                          "not both")
    assert_one_line_error(cli(*search, "--target-latency", "1ms"), "--latency-table")
    assert_one_line_error(cli(*search, "--target-latency", "fast", "--latency-table", table), "not a latency")
    # a table of another resolution, another space, a malformed one
    assert_one_line_error(cli(*search, "--cost-resolution", "64", "--target-latency", "1ms", "--latency-table", table),
                          "--cost-resolution 64", "measured at 32x32")
    assert_one_line_error(cli(*search, "--space", space / "small.toml", "--target-latency", "1ms",
                              "--latency-table", table), "node %lightnl_0 differs", "another space")
    (tmp_path / "broken.json").write_text("{not json")
    assert_one_line_error(cli(*search, "--target-latency", "1ms", "--latency-table", tmp_path / "broken.json"),
                          "not a latency table")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    assert_one_line_error(cli("latency-check", tmp_path / "other.json"), "not a latency table")
    assert_one_line_error(cli(*search, "--target-latency", "1ms", "--latency-table", tmp_path / "none.json"),
                          "no such latency table")
    assert not (tmp_path / "run").exists()
    # autonl run: the same refusals before any work
    assert_one_line_error(cli("run", "--target-latency", "5ms", "--latency-table", table, "--out", tmp_path / "r"),
                          "another space")
    assert_one_line_error(cli("run", "--target-latency", "5ms", "--out", tmp_path / "r"), "--latency-table")
    assert_one_line_error(cli("run", "--target-latency", "5ms", "--target-macs", "300M", "--latency-table", table,
                              "--out", tmp_path / "r"), "not both")
    assert not (tmp_path / "r").exists()
    # a table command that cannot reach its RPC server, or asks onnx for RPC
    out = tmp_path / "t.json"
    assert_one_line_error(cli("latency-table", space / "tiny.ir", "--backend", "tvm", "--rpc",
                              f"127.0.0.1:{free_port()}", *FAST, "--out", out), "not reachable")
    assert_one_line_error(cli("latency-table", space / "tiny.ir", "--rpc", "127.0.0.1:9090", *FAST, "--out", out),
                          "--backend tvm")
    assert_one_line_error(cli("latency-table", space / "tiny.ir", *FAST, "--out", tmp_path / "no" / "t.json"),
                          "does not exist")
    assert_one_line_error(cli("latency-table", space / "tiny.ir", "--backend", "tvm", "--target", "rpi4", *FAST,
                              "--out", out), "not this machine", "--rpc")
    assert_one_line_error(cli("latency-table", space / "tiny.ir", "--int8", *FAST, "--out", out), "int8")
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_tvm_tables_on_the_host_and_over_rpc(space, cli, tmp_path):
    """A TVM (untuned) table here, its check, and one built for the host target and timed
    through a TVM RPC server on loopback."""
    host = tmp_path / "tvm.json"
    cli("latency-table", space / "tiny.ir", "--space", space / "small.toml", "--backend", "tvm", *FAST,
        "--calibration", "1", "--out", host, check_ok=True, timeout=600)
    doc = json.loads(host.read_text())
    assert doc["provenance"]["backend"] == "tvm" and doc["provenance"]["where"] == "host"
    proc = cli("latency-check", host, "--samples", "2", "--rounds", "1", "--json", tmp_path / "c.json",
               check_ok=True, timeout=600)
    assert "MAPE" in proc.stdout
    with rpc_server_on_loopback() as addr:
        remote = tmp_path / "rpc.json"
        cli("latency-table", space / "tiny.ir", "--space", space / "small.toml", "--backend", "tvm", "--rpc", addr,
            *FAST, "--calibration", "1", "--out", remote, check_ok=True, timeout=600)
    doc = json.loads(remote.read_text())
    assert doc["provenance"]["where"] == f"rpc {addr}"
    entries = [e for row in doc["nodes"].values() for e in row["entries"] if e["ms"] > 0]
    assert entries and all(e["runs"] > 0 for e in entries)


def test_a_lowest_round_no_other_round_confirms_gets_more_rounds():
    from autonl.backends.latency.timing import Effort, confirmed, measure_all

    assert confirmed([5.0, 5.1, 9.0], 0.03) and not confirmed([5.0, 6.0, 9.0], 0.03) and not confirmed([5.0], 0.03)
    rounds_seen = {"steady": 0, "disturbed": 0}     # calls of each timer: the warm-up, then one per round

    def counting(name, ms_of_call):
        def timer(n):
            rounds_seen[name] += 1
            return [ms_of_call(rounds_seen[name] - 1)] * n
        return timer
    effort = Effort(warmup=1, rounds=3, round_runs=2, round_seconds=0.0, extra=2)
    # "disturbed": its 3 rounds all differ (a busy host), then it settles at 4.0 ms;
    # "steady": the same 2.0 ms every round
    measured = measure_all({"steady": counting("steady", lambda r: 2.0),
                            "disturbed": counting("disturbed", lambda r: [9.0, 7.0, 5.0][r - 1] if 1 <= r <= 3
                                                  else 4.0)}, effort)
    assert measured.timings["steady"].raw_ms == 2.0 and rounds_seen["steady"] == 1 + 3      # warm-up + 3 rounds
    assert measured.timings["disturbed"].raw_ms == 4.0 and rounds_seen["disturbed"] == 1 + 5   # 2 more, then agreed


def test_the_plain_timer_interleaves_rounds_and_takes_the_median_of_every_call():
    """``interleaved_rounds``/``median_of_calls``/``median_ms`` (benchmarks, a compile's latency
    line, ``autonl profile``): warm-up calls untimed, rounds alternating between the models,
    the median over every timed call, in milliseconds."""
    from autonl.backends.latency.timing import interleaved_rounds, median_ms, median_of_calls

    order = []
    rounds = interleaved_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 2, 3, warmup=1)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(r) for r in rounds["a"]] == [3, 3] and all(t >= 0 for r in rounds["b"] for t in r)
    slow = median_of_calls({"sleep": lambda: time.sleep(0.002)}, 2, 3, warmup=0)["sleep"]
    assert 2.0 <= slow < 50
    assert 2.0 <= median_ms(lambda x: time.sleep(x), 0.002, runs=3, warmup=1) < 50
