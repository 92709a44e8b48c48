"""`autonl run`: data to deployable model in one command, with a report and a manifest."""
import base64
import hashlib
import io
import json
import re

from PIL import Image


def test_run_with_its_defaults_on_a_users_own_image_folder(cli, tmp_path):
    """The journey a new user takes with their own data (4 classes of shapes and textures,
    JPEG/PNG/BMP/WebP in RGB, grey, CMYK, RGBA and palette modes, sizes of their own), with
    `autonl run`'s defaults: then every validation image through the deployed ONNX model,
    preprocessed as the deploy manifest says."""
    import numpy as np
    import onnxruntime as ort

    from autonl.backends.torch.data import make_val_loader
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder

    data = write_shapes_folder(tmp_path / "mine", train_per_class=24, val_per_class=10, seed=3, sizes=(36, 60))
    run = tmp_path / "run"
    # --no-baseline: the baseline's training (as long as search and fine-tuning together) is tested below
    proc = cli("run", "--data", data, "--out", run, "--no-baseline", check_ok=True, timeout=900)
    assert "settings: resolution 40, batch 16" in proc.stderr and "fitted to the data" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert abs(summary["search"]["off_target"]) <= 0.05, summary["search"]
    manifest = json.loads((run / "deploy" / "manifest.json").read_text())
    facts = manifest["data"]
    assert facts["classes"] == ["checker", "circle", "square", "stripes"] and facts["input"]["channel_order"] == "RGB"
    assert manifest["checks"]["real_data"]["nonfinite_images"] == 0
    resolution = facts["input"]["shape"][-1]
    val, classes = make_val_loader(str(data), resolution, 16, workers=0)
    sess = ort.InferenceSession(str(run / "deploy" / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct = total = 0
    for x, y in val:
        logits = sess.run(None, {name: x.numpy()})[0]
        assert np.isfinite(logits).all()
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    assert total == 40
    # chance is 0.25: 18 or more right of 40 by chance has probability 0.003 (0.575 here)
    assert correct / total >= 0.45, correct / total
    md = (run / "report.md").read_text()
    assert "chance level 0.250" in md and "checker, circle, square, stripes" in md
    # the report and the manifest (this test also stands for `autonl run --data builtin`, whose
    # code path differs only in the settings, fitted_settings("digits") in test_user_data)
    assert "report:" in proc.stdout and "onnxruntime fp32" in proc.stdout
    for sub in ("search/decisions.json", "derived/graph.json", "train/model/weights.pt", "deploy/model.onnx",
                "deploy/model.int8.onnx", "deploy/manifest.json"):
        assert (run / sub).is_file(), sub
    html = (run / "report.html").read_text()
    # the plots are embedded, so report.html alone is the whole report (they were links)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3 and "<img src=\"search/" not in html
    for name, png in zip(("search/macs.png", "search/decisions.png", "train/curves.png"), images):
        assert base64.b64decode(png) == (run / name).read_bytes(), name
        with Image.open(io.BytesIO(base64.b64decode(png))) as im:
            assert im.format == "PNG" and min(im.size) > 100
    # every network at the data's 4 classes (MobileNetV2 is 300.8M MACs with 1000)
    for needle in ("| mobilenetv2 |", "| autonl-s |", "| autonl-l |", "| derived |", "onnxruntime int8",
                   "max |diff|", "every network with 4 classes", f"Latency (batch 1 at {resolution}x{resolution}"):
        assert needle in md, needle
    assert summary["deploy_checks"]["parity"]["passed"]
    assert summary["comparison"] is None and "Accuracy per class" not in md   # --no-baseline
    top = json.loads((run / "manifest.json").read_text())
    assert top["inputs"]["data"] == str(data) and top["seeds"]["search"] == 0
    assert "report.html" in top["files"] and "deploy/manifest.json" in top["files"]
    for name, meta in top["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == meta["sha256"], name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def test_run_compares_the_builtin_space_with_a_mobilenetv2_of_the_same_macs(cli, tmp_path):
    """The built-in space's report: the derived network against a MobileNetV2 whose width
    gives it the derived network's MACs, trained from scratch for the search's and the
    fine-tuning's steps together; accuracy overall and per class, latency in the same table."""
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder

    data = write_shapes_folder(tmp_path / "mine", train_per_class=8, val_per_class=5, seed=5, sizes=(32, 40))
    run = tmp_path / "run"
    proc = cli("run", "--data", data, "--out", run, "--search-steps", "8", "--train-steps", "6",
               "--target-macs", "250M", check_ok=True, timeout=600)
    summary = json.loads((run / "summary.json").read_text())
    cmp = summary["comparison"]
    b = cmp["baseline"]
    assert b["name"].startswith("MobileNetV2 x") and b["steps"] == 14
    assert abs(b["macs"] / b["derived_macs"] - 1) < 0.15, b
    assert cmp["derived_acc"]["per_class_n"] == [5, 5, 5, 5]
    assert set(cmp["latency_ms"]) == {"derived", "baseline"} and min(cmp["latency_ms"].values()) > 0
    md = (run / "report.md").read_text()
    assert f"## Against {b['name']}, trained for the same steps" in md and "### Accuracy per class" in md
    assert f"baseline: {b['name']}, 14 steps" in proc.stdout
    assert (cmp["warning"] is None) == cmp["derived_better"]
    if cmp["warning"]:
        assert cmp["warning"] in proc.stderr and cmp["warning"] in md


def test_run_searches_a_users_imported_model_toward_a_latency_and_compares_with_it(cli, tmp_path):
    """`autonl run mynet.ir --data D --target-latency X --latency-table T --space lightnl-only`: a
    user's own network (imported from a plain nn.Module) searched for LightNL placement only,
    with a latency table of its own space, then the report's comparison with that network
    trained from scratch for the same steps (overall and per class, latency measured in the
    same table), and the headline latency equal to the report's onnxruntime row."""
    import shutil
    from pathlib import Path

    from autonl.backends.latency import LatencyTable
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder

    nets = Path(__file__).parent / "nets"
    shutil.copy(nets / "tiny_user_net.py", tmp_path / "tiny_user_net.py")
    graph = tmp_path / "mynet.ir"
    cli("import", "tiny_user_net:build", "--input-shape", "1,3,32,32", "--out", graph, cwd=tmp_path, check_ok=True)
    data = write_shapes_folder(tmp_path / "mine", train_per_class=12, val_per_class=6, seed=4, sizes=(36, 48))
    table = tmp_path / "table.json"
    cli("latency-table", graph, "--space", "lightnl-only", "--threads", "1", "--rounds", "3", "--calibration", "4",
        "--out", table, check_ok=True)
    t = LatencyTable.read(table)
    lo, hi = t.bounds(t.space_graph())
    target = lo + 0.6 * (hi - lo)
    run = tmp_path / "run"
    proc = cli("run", graph, "--data", data, "--target-latency", f"{target:.4f}ms", "--latency-table", table,
               "--space", "lightnl-only", "--search-steps", "12", "--train-steps", "12", "--out", run,
               check_ok=True, timeout=600)
    assert "settings: resolution 32 (the input size of" in proc.stderr
    assert "compared with your network (mynet.ir) (24 steps from scratch)" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    cmp = summary["comparison"]
    assert cmp["baseline"]["steps"] == 24 and cmp["classes"] == ["checker", "circle", "square", "stripes"]
    assert cmp["derived_acc"]["per_class_n"] == [6, 6, 6, 6] == cmp["baseline_acc"]["per_class_n"]
    # the baseline's weights were trained here, from scratch, on the user's graph as it is
    base_graph = json.loads((run / "baseline" / "model" / "graph.json").read_text())
    assert not any(n.get("op") == "lightnl" for n in base_graph["nodes"])
    assert cmp["derived_better"] == (cmp["derived_acc"]["val_acc"] > cmp["baseline_acc"]["val_acc"])
    assert (cmp["warning"] is None) == cmp["derived_better"]
    # blocks kept as the user wrote them: only LightNL nodes added
    derived = json.loads((run / "derived" / "graph.json").read_text())
    assert {n["op"] for n in derived["nodes"]} - {n["op"] for n in base_graph["nodes"]} <= {"lightnl"}
    # one latency figure per runtime: the headline's measured latency is the table's onnxruntime row
    lt, lat = summary["latency_target"], summary["latency"]
    assert abs(lt["measured_ms"] / lat["onnxruntime fp32"] - 1) <= 0.10
    assert summary["latency_timing"]["onnxruntime_threads"] == 1 == summary["latency_timing"]["torch_threads"]
    md = (run / "report.md").read_text()
    assert "## Against your network (mynet.ir), trained for the same steps" in md
    assert "### Accuracy per class" in md and md.count("| 6 |") == 4
    assert f"measures {lt['measured_ms']:.3f} ms" in md
    assert (run / "deploy" / "model.onnx").is_file() and "baseline: your network (mynet.ir), 24 steps" in proc.stdout
    html = (run / "report.html").read_text()
    assert "Accuracy per class" in html and "your network (mynet.ir)" in html


def test_run_refuses_a_users_source_without_a_target_or_with_other_classes(cli, tmp_path):
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder
    from helpers import assert_one_line_error

    data = write_shapes_folder(tmp_path / "mine", train_per_class=2, val_per_class=1, seed=4, sizes=(36, 36))
    graph = tmp_path / "net.json"
    graph.write_text(cli("show", "mobilenetv2", "-r", "32", "--width", "0.25", "--classes", "3", "--format",
                         "json").stdout)
    out = tmp_path / "run"
    assert_one_line_error(cli("run", graph, "--data", data, "--out", out, real=False),
                          "give --target-macs", "autonl show")
    assert_one_line_error(cli("run", graph, "--data", data, "--target-macs", "5M", "--out", out, real=False),
                          "predicts 3 classes", "has 4")
    assert_one_line_error(cli("run", graph, "--data", data, "--target-macs", "5M", "-r", "64", "--out", out,
                              real=False), "apply to presets only")
    assert not out.exists()
