"""`autonl run`: data to deployable model in one command, with a report and a manifest."""
import base64
import hashlib
import io
import json
import re

from PIL import Image


def test_run_on_the_builtin_data_writes_a_report_with_plots_and_a_manifest(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("run", "--out", run, "--search-steps", "12", "--train-steps", "12", check_ok=True)
    assert "report:" in proc.stdout and "onnxruntime fp32" in proc.stdout
    for sub in ("search/decisions.json", "derived/graph.json", "train/model/weights.pt", "deploy/model.onnx",
                "deploy/model.int8.onnx", "deploy/manifest.json"):
        assert (run / sub).is_file(), sub
    html = (run / "report.html").read_text()
    # the plots are embedded, so report.html alone is the whole report (they were links)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3 and "<img src=\"search/" not in html
    for name, data in zip(("search/macs.png", "search/decisions.png", "train/curves.png"), images):
        assert base64.b64decode(data) == (run / name).read_bytes(), name
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and min(im.size) > 100
    md = (run / "report.md").read_text()
    # every network at the data's 10 classes (MobileNetV2 is 300.8M MACs with 1000)
    for needle in ("| mobilenetv2 | 299.5M", "| autonl-s |", "| autonl-l |", "| derived |", "onnxruntime int8",
                   "max |diff|", "every network with 10 classes", "Latency (batch 1 at 32x32"):
        assert needle in md, needle
    summary = json.loads((run / "summary.json").read_text())
    assert summary["deploy_checks"]["parity"]["passed"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["inputs"]["data"] == "digits" and manifest["seeds"]["search"] == 0
    assert "report.html" in manifest["files"] and "deploy/manifest.json" in manifest["files"]
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == meta["sha256"], name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
