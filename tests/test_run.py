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
    from autonl.backends.torch.shapes_folder import write_shapes_folder

    data = write_shapes_folder(tmp_path / "mine", train_per_class=24, val_per_class=10, seed=3, sizes=(36, 60))
    run = tmp_path / "run"
    proc = cli("run", "--data", data, "--out", run, check_ok=True, timeout=900)
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
    top = json.loads((run / "manifest.json").read_text())
    assert top["inputs"]["data"] == str(data) and top["seeds"]["search"] == 0
    assert "report.html" in top["files"] and "deploy/manifest.json" in top["files"]
    for name, meta in top["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == meta["sha256"], name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
