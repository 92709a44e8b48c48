"""`autonl derive` on a real (tiny) search run, `autonl show --diff`, and fine-tuning."""
import json

import pytest
import torch

from helpers import assert_one_line_error, recomputed_val_accuracy

TINY = ["--batch-size", "16", "--train-size", "96", "--val-size", "32", "--workers", "0", "--arch-lr", "0.2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import subprocess
    from conftest import autonl_exe
    folder = tmp_path_factory.mktemp("search") / "run"
    proc = subprocess.run([autonl_exe(), "search", "--target-macs", "250M", "--cost-resolution", "224",
                           "--steps", "8", "--warmup-steps", "3", "--out", str(folder), *TINY],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder


def test_derive_writes_a_model_folder(cli, run, tmp_path):
    out = tmp_path / "derived"
    proc = cli("derive", run, "--out", out, check_ok=True)
    assert "mobilenetv2" in proc.stdout and "autonl-l" in proc.stdout and "derived" in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["comparison.json", "comparison.txt", "cost.json", "data.json", "decisions.json", "graph.ir", "graph.json",
                     "graph_at_cost_resolution.ir", "manifest.json", "weights.pt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "derive" and set(manifest["files"]) == set(names) - {"manifest.json"}
    cost = json.loads((out / "cost.json").read_text())
    result = json.loads((run / "result.json").read_text())
    assert cost["resolution"] == 224 and cost["macs"] == result["derived_macs"]
    comparison = json.loads((out / "comparison.json").read_text())
    # the published networks at the derived one's 10 classes (AutoNL-L is 352,108,448 MACs with 1000)
    assert comparison["autonl-l"]["macs"] == 350841248 and len(comparison["autonl-l"]["lightnl"]) == 14
    assert "at 224x224, 10 classes" in (out / "comparison.txt").read_text()
    evaluated = json.loads(cli("eval", out, "--data", "digits", "--val-size", "32", "--workers", "0",
                               check_ok=True).stdout)
    # the reported accuracy is that of the derived model's predictions on the 32 validation images
    assert evaluated["val_n"] == 32
    assert evaluated["val_acc"] == pytest.approx(recomputed_val_accuracy(out, "digits", 32)[0])
    for extra in ([], ["--from-scratch"]):
        tuned = tmp_path / f"tuned{len(extra)}"
        cli("train", out, "--data", "digits", "--steps", "2", "--out", tuned, "--batch-size", "16",
            "--train-size", "64", "--val-size", "32", "--workers", "0", *extra, check_ok=True)
        assert (tuned / "model" / "weights.pt").exists()
    assert_one_line_error(cli("derive", run, "--out", out), "already exists", "--force")


def _decisions(run):
    return json.loads((run / "decisions.json").read_text())


@pytest.mark.parametrize("edit, fragments", [
    (lambda d: d.update({"mbconv_77": {"k": 3}}), ["node 'mbconv_77' is not in graph"]),
    (lambda d: d["mbconv_1"].update({"kernel": 3}), ["node 'mbconv_1' has no choice for attribute 'kernel'"]),
    (lambda d: d["mbconv_1"].update({"k": 7}), ["node 'mbconv_1' attribute 'k': 7 is not one of the options [3, 5]"]),
    (lambda d: d["lightnl_3"].update({"insert": "yes"}), ["node 'lightnl_3' attribute 'insert': expected bool, got str"]),
])
def test_bad_decisions_leave_nothing(cli, run, tmp_path, edit, fragments):
    decisions = _decisions(run)
    edit(decisions)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(decisions))
    out = tmp_path / "out"
    assert_one_line_error(cli("derive", run, "--out", out, "--decisions", bad), str(bad), *fragments)
    assert list(tmp_path.iterdir()) == [bad]


def test_checkpoint_that_does_not_fit(cli, run, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = torch.load(copy / "checkpoint.pt", weights_only=True)
    del ckpt["model"]["net.mbconv_3.dw.weight"]
    torch.save(ckpt, copy / "checkpoint.pt")
    assert_one_line_error(cli("derive", copy, "--out", tmp_path / "out"), "weights do not fit graph",
                          "missing net.mbconv_3.dw.weight")
    (copy / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert_one_line_error(cli("derive", copy, "--out", tmp_path / "out"), "not a readable checkpoint")
    assert not (tmp_path / "out").exists()
    (tmp_path / "plain").mkdir()
    assert_one_line_error(cli("derive", tmp_path / "plain", "--out", tmp_path / "out"), "not a search run folder")


def test_show_diff(cli):
    out = cli("show", "autonl-s", "--diff", "autonl-l", check_ok=True).stdout.splitlines()
    assert any(line.startswith("~ %mbconv_1: ") and "k 3 -> 5" in line for line in out)
    assert "+ %lightnl_5 = lightnl(%mbconv_5) {r=0.25, s=2, eps=0.001, momentum=0.01}" in out
    assert out[-1] == ("53 difference(s); MACs 266,242,176 -> 352,108,448 (+85,866,272), "
                       "params 4,389,350 -> 5,580,336 (+1,190,986)")
    same = cli("show", "autonl-s", "--diff", "autonl-s", check_ok=True).stdout
    assert same.startswith("0 difference(s)")
