"""A user's own data, carried through: data facts in every model folder and deploy folder,
settings fitted to the data, the chance level, one overwrite policy, weights never dropped."""
import json
import shutil

import pytest

from autonl.backends.torch.data import accuracy_line, chance_level, data_facts, fitted_settings
from autonl.backends.torch.data.shapes_folder import SHAPES_CLASSES, write_shapes_folder

from helpers import TINY_IR, assert_one_line_error


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("data") / "shapes", 6, 3, seed=5, sizes=(40, 72))


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """TINY trained for two steps on the shapes folder (4 classes), through the CLI."""
    from conftest import autonl_exe
    import subprocess

    root = tmp_path_factory.mktemp("trained")
    graph = root / "tiny.ir"
    graph.write_text(TINY_IR.replace("{out=10}", "{out=4}"))
    subprocess.run([autonl_exe(), "train", str(graph), "--data", str(shapes), "--steps", "2", "--batch-size", "4",
                    "--workers", "0", "--out", str(root / "run")], check=True, capture_output=True, timeout=300)
    return root / "run"


def test_the_shapes_folder_holds_every_mode_and_format(shapes):
    from PIL import Image

    modes, exts = set(), set()
    for p in shapes.rglob("*.*"):
        with Image.open(p) as im:
            modes.add(im.mode)
        exts.add(p.suffix)
    assert {"RGB", "L"} <= modes and len(modes) >= 4 and len(exts) >= 3
    assert sorted(d.name for d in (shapes / "val").iterdir()) == list(SHAPES_CLASSES)


def test_settings_are_fitted_to_the_data_with_the_reason(shapes, tmp_path):
    import numpy as np
    from PIL import Image

    sides = []
    for p in sorted((shapes / "train").rglob("*.*")):
        with Image.open(p) as im:
            sides.append(min(im.size))
    s = fitted_settings(str(shapes))
    assert s["resolution"] == int(np.median(sides)) // 8 * 8 and 40 <= s["resolution"] <= 64
    assert s["batch_size"] == 16 and s["search_steps"] == 150    # 24 images: the floor of 150 steps
    assert "median shorter side" in s["why"]
    big = write_shapes_folder(tmp_path / "big", 70, 1, seed=1, sizes=(150, 200))
    s = fitted_settings(str(big))
    assert s["resolution"] == 64 and s["batch_size"] == 32 and s["search_steps"] == 350   # 280 images x 40 / 32
    assert fitted_settings(str(big), gpu=True)["resolution"] >= 144
    assert fitted_settings("digits")["resolution"] == 32


def test_the_chance_level_is_the_most_common_class(shapes):
    assert chance_level(str(shapes)) == (0.25, 4)
    line, warn = accuracy_line(0.27, str(shapes))
    assert line == "val acc 0.270 (chance 0.250, 4 classes)" and "within 5 points of chance" in warn
    assert accuracy_line(0.9, str(shapes))[1] is None
    assert 0.09 < chance_level("digits")[0] < 0.12


def test_model_folders_and_deploy_folders_carry_the_data_facts(cli, trained, shapes, tmp_path):
    facts = json.loads((trained / "model" / "data.json").read_text())
    assert facts == data_facts(str(shapes), 16)
    assert facts["classes"] == list(SHAPES_CLASSES) and facts["input"]["mean"] == [0.485, 0.456, 0.406]
    assert "centre 16x16 crop" in facts["input"]["resize"]
    # compile: checked on the recorded data's validation images; int8 calibrated on them too
    out = tmp_path / "deploy"
    proc = cli("compile", trained, "--out", out, "--int8", check_ok=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"] == facts
    assert manifest["int8"]["calibration"]["data"] == str(shapes)
    assert manifest["checks"]["real_data"]["images"] == 12 and manifest["checks"]["real_data"]["nonfinite_images"] == 0
    assert "real images: 12 of" in proc.stderr
    # eval: the recorded data, and only val/ is read (a folder without train/ is fine)
    val_only = tmp_path / "val_only"
    shutil.copytree(shapes / "val", val_only / "val")
    res = cli("eval", trained, "--data", val_only, "--workers", "0", check_ok=True)
    assert json.loads(res.stdout)["val_n"] == 12 and "(chance 0.250, 4 classes)" in res.stderr
    res = cli("eval", trained, "--workers", "0", check_ok=True)
    assert json.loads(res.stdout)["data"] == str(shapes)


def test_a_board_readme_says_how_to_feed_the_model(trained, shapes):
    from autonl.backends.checks import describe_data
    text = describe_data(json.loads((trained / "model" / "data.json").read_text()))
    for needle in ("NCHW float32", "RGB", "mean [0.485, 0.456, 0.406]", "checker, circle, square, stripes",
                   "centre 16x16 crop"):
        assert needle in text, needle


def test_one_overwrite_policy(cli, trained, tmp_path):
    out = tmp_path / "deploy"
    cli("compile", trained, "--out", out, "--int8", check_ok=True)
    (out / "tuning").mkdir()
    (out / "tuning" / "db.json").write_text("{}")
    assert_one_line_error(cli("compile", trained, "--out", out), "exists", "--force", "tuning/")
    assert (out / "model.int8.onnx").is_file()          # refused: untouched
    cli("compile", trained, "--out", out, "--force", check_ok=True)
    assert not (out / "model.int8.onnx").exists()       # replaced whole: no stale int8 model beside the new one
    assert (out / "tuning" / "db.json").read_text() == "{}"  # the tuning database is kept
    assert set(json.loads((out / "manifest.json").read_text())["files"]) == {
        p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json"}
    # a failed --force leaves the old folder as it was
    before = sorted(p.name for p in out.iterdir())
    assert_one_line_error(cli("compile", trained, "--out", out, "--force", "--data", tmp_path / "nope"), "nope")
    assert sorted(p.name for p in out.iterdir()) == before
    # train: a folder that holds anything is refused; --force starts a new run in its place
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    args = ("train", trained / "model", "--steps", "1", "--batch-size", "4", "--workers", "0", "--out", run)
    assert_one_line_error(cli(*args), "exists", "--force", "--resume")
    cli(*args, "--force", check_ok=True)
    assert not (run / "notes.txt").exists() and (run / "model" / "weights.pt").is_file()


def test_opt_on_a_model_keeps_its_weights(cli, trained, tmp_path):
    out = tmp_path / "folded.ir"
    proc = cli("opt", trained / "model", "-p", "fold-bn", "-o", out, check_ok=True)
    assert (tmp_path / "folded.weights.pt").is_file() and "its weights" in proc.stderr
    comp = cli("compile", out, "--out", tmp_path / "c", check_ok=True)
    assert "random" not in comp.stderr           # the weights beside the graph file were found
    assert "no data given or recorded" in (tmp_path / "c" / "manifest.json").read_text()
    # without -o the graph goes to stdout, and a line says the weights were not written
    proc = cli("opt", trained / "model", "-p", "fold-bn", check_ok=True)
    assert "weights of" in proc.stderr and "not written" in proc.stderr


def test_a_tvm_build_is_checked_on_the_recorded_data_too(cli, trained, tmp_path):
    """The host library is built for batch 1: the check feeds it image by image."""
    out = tmp_path / "tvm"
    cli("compile", trained, "--backend", "tvm", "--target", "host", "--out", out, "--check-images", "5",
        check_ok=True, timeout=600)
    real = json.loads((out / "manifest.json").read_text())["checks"]["real_data"]
    assert real["images"] == 5
    (row,) = real["compiled"].values()
    assert row["passed"] and row["nonfinite_images"] == 0


def test_train_and_search_fit_their_settings_to_a_folder_as_run_does(cli, tmp_path):
    """Left without --steps, --batch-size, --lr (and --resolution for a preset), `autonl train`
    and `autonl search` on an ImageFolder take what `autonl run` fits to it, and say so;
    what is given is kept."""
    import json

    from autonl.backends.torch.data import fitted_settings, scaled_lr
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder

    data = write_shapes_folder(tmp_path / "mine", train_per_class=6, val_per_class=2, seed=3, sizes=(40, 48))
    fit = fitted_settings(str(data))
    proc = cli("train", "mobilenetv2", "-w", "0.25", "--data", data, "--steps", "2", "--out", tmp_path / "t",
               check_ok=True)
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["batch_size"] == fit["batch_size"] == 16
    assert cfg["lr"] == scaled_lr(0.1, 16)
    assert f"settings: batch 16, lr {scaled_lr(0.1, 16):g}" in proc.stderr and "fitted to the data" in proc.stderr
    graph = json.loads((tmp_path / "t" / "model" / "graph.json").read_text())
    assert graph["inputs"][0]["type"]["shape"][-1] == fit["resolution"] == 40
    proc = cli("search", "--data", data, "--target-macs", "250M", "--cost-resolution", "224", "--batch-size", "8",
               "--steps", "3", "--out", tmp_path / "s", check_ok=True)
    cfg = json.loads((tmp_path / "s" / "search_config.json").read_text())
    assert cfg["batch_size"] == 8 and cfg["lr"] == scaled_lr(0.05, 8) and cfg["warmup_steps"] == 1
    assert "settings: warm-up 1 steps, lr" in proc.stderr
