"""The `autonl` command as a user runs it."""
import json

import pytest

from helpers import assert_one_line_error


def test_show_cost_json_figures(cli):
    expected = {"mobilenetv2": (300.8e6, 0, 3.50e6), "autonl-s": (266.2e6, 4.99e6, 4.39e6),
                "autonl-l": (352.1e6, 8.00e6, 5.58e6)}
    for preset, (macs, lightnl, params) in expected.items():
        out = json.loads(cli("show", preset, "--cost", "--json", check_ok=True).stdout)
        assert out["relaxed"] is False
        assert abs(out["macs"] - macs) / macs < 0.0005 if preset != "mobilenetv2" else abs(out["macs"] - macs) / macs < 0.005
        assert round(out["lightnl_macs"] / 1e4) == round(lightnl / 1e4)
        assert round(out["params"] / 1e4) == round(params / 1e4)
        assert sum(n["macs"] for n in out["nodes"]) == out["macs"]


def test_show_text_has_graph_and_cost_table(cli):
    out = cli("show", "autonl-s", "--cost", check_ok=True).stdout
    assert out.startswith("graph autonl_s(%x: f32[1,3,224,224]) -> f32[1,1000] {")
    assert "%lightnl_1" in out and "LightNL MACs" in out
    total = [line for line in out.splitlines() if line.startswith("total")][0]
    assert "266M" in total and "4.39M" in total and "4.99M" in total


def test_show_relaxed_search_space(cli):
    out = json.loads(cli("show", "search-space", "--cost", "--json", check_ok=True).stdout)
    assert out["relaxed"] and out["macs"] < out["macs_max"]


def test_show_dot(cli):
    out = cli("show", "autonl-s", "-r", "64", "--format", "dot", check_ok=True).stdout
    assert out.lstrip().startswith("strict digraph") or out.lstrip().startswith("digraph")
    assert "lightnl_1" in out


def test_show_preset_options(cli):
    out = json.loads(cli("show", "mobilenetv2", "-r", "160", "-w", "0.75", "--cost", "--json", check_ok=True).stdout)
    assert out["inputs"]["x"] == "f32[1,3,160,160]"
    assert 100e6 < out["macs"] < 150e6


def test_opt_writes_atomically(cli, tmp_path):
    out = tmp_path / "lowered.json"
    dumps = tmp_path / "dumps"
    proc = cli("opt", "autonl-s", "-r", "64", "-p", "lower-composites", "-p", "dce", "-o", out,
               "--dump-dir", dumps, "--timing", check_ok=True)
    assert "lower-composites" in proc.stderr and "wrote" in proc.stderr
    again = cli("show", out, "--cost", "--json", check_ok=True)
    assert json.loads(again.stdout)["lightnl_macs"] == 0  # lowered: matmuls, no lightnl nodes
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["dumps", "lowered.json"]
    assert len(list(dumps.iterdir())) == 3


@pytest.mark.parametrize("args, fragments", [
    (["show", "autonl-m"], ["unknown preset or file 'autonl-m'", "known presets: autonl-l, autonl-s, mobilenetv2, search-space"]),
    (["show", "autonl-s", "--format", "png"], ["Invalid value for '--format'"]),
    (["show", "autonl-s", "--bogus"], ["No such option"]),
    (["opt", "autonl-s", "-p", "fold"], ["unknown pass 'fold'", "known passes:"]),
    (["opt", "autonl-s", "-p", "dce{x="], ["<pass>:1:"]),
    (["ops", "convolution"], ["unknown op 'convolution'"]),
    (["show", "autonl-s", "-r", "0"], ["resolution must be a positive integer"]),
])
def test_bad_input_is_one_line(cli, args, fragments):
    assert_one_line_error(cli(*args), *fragments)


@pytest.mark.parametrize("edit, fragments", [
    (lambda t: t.replace("= mbconv(%stem_act)", "= mbconvv(%stem_act)"), ["node %mbconv_0 (mbconvv): unknown op 'mbconvv'", ":5:3:"]),
    (lambda t: t.replace("out=16, e=1, k=3", "out=16, e=1, kernel=3"), ["node %mbconv_0 (mbconv): unknown attribute 'kernel'"]),
    (lambda t: t.replace("= mbconv(%stem_act)", "= mbconv(%lightnl_1)"), ["node %mbconv_0 (mbconv): is part of a cycle"]),
    (lambda t: t.replace("= mbconv(%stem_act)", "= mbconv(%stem_out)"), ["node %mbconv_0 (mbconv): input %stem_out is not defined"]),
    (lambda t: t.replace("{out=32, k=3, s=2}", "{out=32, k=3, s=2"), [":3:3: unexpected '%stem_bn'"]),
    (lambda t: "\x00\xff" + t, ["unexpected character"]),
])
def test_bad_graph_files(cli, tmp_path, edit, fragments):
    text = cli("show", "autonl-l", check_ok=True).stdout
    bad = tmp_path / "bad.ir"
    bad.write_text(edit(text))
    assert_one_line_error(cli("show", bad), str(bad), *fragments)


def test_bad_files_of_other_kinds(cli, tmp_path):
    binary = tmp_path / "weights.ir"
    binary.write_bytes(bytes(range(256)))
    assert_one_line_error(cli("show", binary), "not a text file")
    broken = tmp_path / "g.json"
    broken.write_text('{"format": "autonl-ir", "version": 1,')
    assert_one_line_error(cli("show", broken), f"{broken}:1:")
    assert_one_line_error(cli("show", tmp_path), "not a file")
    assert_one_line_error(cli("show", tmp_path / "g.json", "-r", "64"), "apply to presets only")


def test_unwritable_output_leaves_nothing(cli, tmp_path):
    target = tmp_path / "missing" / "out.ir"
    assert_one_line_error(cli("opt", "mobilenetv2", "-p", "dce", "-o", target), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_backend_option_bounds_come_from_the_options_dataclass(cli, tmp_path):
    """A backend option's bound is written once, in its options dataclass: the command line
    refuses ``--tune-minutes 0`` while it parses (one line, before any work, nothing written),
    with the very line the dataclass gives when the backend is handed the same value."""
    from autonl.backends.base import options_of
    from autonl.backends.onnx.options import OnnxOptions
    from autonl.backends.tvm.options import TvmOptions
    from autonl.ir import AutonlError
    from autonl.ir.ranges import POSITIVE, range_of

    assert range_of(TvmOptions, "tune_minutes") is POSITIVE
    with pytest.raises(AutonlError) as refused:
        TvmOptions(tune_minutes=0.0)
    graph = tmp_path / "tiny.ir"
    graph.write_text(cli("show", "mobilenetv2", "-r", "32", "-w", "0.25", "--classes", "4", check_ok=True).stdout)
    out = tmp_path / "out"
    line = assert_one_line_error(cli("compile", graph, "--backend", "tvm", "--tune-minutes", "0", "--out", out))
    assert line == f"error: {refused.value}" == "error: --tune-minutes must be a finite number > 0 (got 0.0)"
    assert not out.exists()
    with pytest.raises(AutonlError, match=r"^--opset must be an integer >= 17 \(got 16\)$"):
        OnnxOptions(opset=16)
    line = assert_one_line_error(cli("compile", graph, "--opset", "16", "--out", out))
    assert line == "error: --opset must be an integer >= 17 (got 16)" and not out.exists()
    with pytest.raises(AutonlError, match="--layout must be one of nhwc, nchw"):
        TvmOptions(layout="nwhc")
    # every numeric backend option has its bound in its dataclass, and the flag takes it from there
    for cls in (TvmOptions, OnnxOptions):
        for o in options_of(cls):
            assert o.type not in (int, float) or o.range is range_of(cls, o.name), o.name
