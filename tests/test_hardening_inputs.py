"""Issue #22, "every argument checked, model folders checked, images bounded": each bad input
below gets one `error:` line, a non-zero exit, and nothing written.

1. numeric options out of range are refused while the command line is parsed;
2. `autonl import` of a callable that exits or returns something that is not an nn.Module;
3. model folders whose weights are not finite or not of the module's dtype, or whose
   graph.ir disagrees with graph.json (the authoritative graph);
4. images over the pixel limit ($AUTONL_MAX_IMAGE_PIXELS, default 64 megapixels) are refused
   from their header, like corrupt ones (--skip-corrupt leaves them out).
"""
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autonl.backends.torch.data import image_folder, transforms
from autonl.backends.torch.config import SearchConfig, TrainConfig
from autonl.backends.torch.data import CorruptImageWarning, EvalTransform, make_loaders
from autonl.backends.torch.lower import to_torch
from autonl.backends.torch.train.weights import load_model, save_model
from autonl.cli.main import main
from autonl.ir import AutonlError, build_preset

from helpers import assert_one_line_error


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTONL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTONL_MAX_IMAGE_PIXELS", raising=False)


# -- 1. numeric options ------------------------------------------------------------------------
# Each command line also names a missing dataset, model or module: without a parse-time check
# it fails later, on that, with another line.
NOPE = "/nonexistent/autonl"
OUT_OF_RANGE = [
    (["search", "--target-macs", "5M", "--cost-resolution", "0", "--data", NOPE], "--cost-resolution", "8..4096"),
    (["train", "autonl-s", "-r", "100000", "--data", NOPE], "--resolution", "8..4096"),
    (["train", "autonl-s", "--steps", "0", "--data", NOPE], "--steps", "positive integer"),
    (["train", "autonl-s", "--batch-size", "0", "--data", NOPE], "--batch-size", "positive integer"),
    (["train", "autonl-s", "--lr", "nan", "--data", NOPE], "--lr", "finite number > 0"),
    (["train", "autonl-s", "--lr", "-0.1", "--data", NOPE], "--lr", "> 0"),
    (["train", "autonl-s", "--weight-decay", "-1", "--data", NOPE], "--weight-decay", "[0, 1]"),
    (["train", "autonl-s", "--label-smoothing", "1", "--data", NOPE], "--label-smoothing", "[0, 1)"),
    (["train", "autonl-s", "--workers", "-1", "--data", NOPE], "--workers", "0..256"),
    (["train", "autonl-s", "--seed", "-1", "--data", NOPE], "--seed", "0..4294967295"),
    (["train", "autonl-s", "--precise-bn", "-1", "--data", NOPE], "--precise-bn", ">= 0"),
    (["train", "autonl-s", "--train-size", "0", "--data", NOPE], "--train-size", "positive integer"),
    (["train", "autonl-s", "-w", "0", "--data", NOPE], "--width", "(0, 16]"),
    (["search", "--target-macs", "5M", "--lambda", "-1", "--data", NOPE], "--lambda", ">= 0"),
    (["search", "--target-macs", "5M", "--tau", "inf", "--data", NOPE], "--tau", "finite number > 0"),
    (["search", "--target-macs", "5M", "--nproc", "0", "--data", NOPE], "--nproc", "1..256"),
    (["search", "--target-macs", "inf", "--data", NOPE], "--target-macs", "positive, finite"),
    (["eval", NOPE, "--batch-size", "0"], "--batch-size", "positive integer"),
    (["show", "autonl-s", "-w", "inf"], "--width", "(0, 16]"),
    (["show", "autonl-s", "--batch", "0"], "--batch", "1..4096"),
    (["show", "autonl-s", "--classes", "0"], "--classes", "1..1000000"),
    (["compile", NOPE, "--calib-images", "0"], "--calib-images", "positive integer"),
    (["compile", NOPE, "--eval-images", "0"], "--eval-images", "positive integer"),
    (["compile", NOPE, "--opset", "16"], "--opset", ">= 17"),
    (["compile", NOPE, "--backend", "tvm", "--tune-trials", "-1"], "--tune-trials", ">= 0"),
    (["compile", NOPE, "--backend", "tvm", "--tune-minutes", "0"], "--tune-minutes", "finite number > 0"),
    (["compile", NOPE, "--seed", "-3"], "--seed", "0..4294967295"),
    (["deploy", NOPE, "--qemu", "--runs", "0"], "--runs", "positive integer"),
    (["profile", NOPE, "--top", "0"], "--top", "positive integer"),
    (["run", "--data", NOPE, "--resolution", "4"], "--resolution", "8..4096"),
    (["import", "no_such_module_xyz:build", "--input-shape", "1,3,0,8"], "--input-shape", "H must be"),
    (["import", "no_such_module_xyz:build", "--input-shape", "1,3,8"], "--input-shape", "N,C,H,W"),
    (["import", "no_such_module_xyz:build", "--input-shape", "64,64,4096,4096"], "--input-shape", "allowed"),
]


@pytest.mark.parametrize("args, flag, says", OUT_OF_RANGE, ids=[" ".join(a[:1] + [f]) for a, f, _ in OUT_OF_RANGE])
def test_numeric_options_out_of_range_are_one_line_at_parse_time(tmp_path, capsys, args, flag, says):
    out = tmp_path / "out"
    if args[0] in ("train", "search", "compile", "run", "import"):
        args = [*args, "--out", str(out)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert flag in err[0] and says in err[0], err[0]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_audits_command_lines_through_the_installed_command(cli, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(cli("search", "--target-macs", "5M", "--cost-resolution", "0", "--out", out),
                          "--cost-resolution must be a positive integer in 8..4096 (got 0)")
    assert_one_line_error(cli("train", "autonl-s", "-r", "100000", "--out", out),
                          "--resolution must be a positive integer in 8..4096 (got 100000)")
    assert not out.exists()


def test_the_configs_check_the_same_ranges_as_the_command_line():
    with pytest.raises(AutonlError, match=r"^--workers must be an integer in 0\.\.256 \(got -1\)$"):
        TrainConfig.from_dict({"workers": -1})
    with pytest.raises(AutonlError, match=r"^--cost-resolution must be a positive integer in 8\.\.4096 \(got 0\)$"):
        SearchConfig(target_macs=5e6, cost_resolution=0)
    with pytest.raises(AutonlError, match="MAC target"):
        SearchConfig(target_macs=float("inf"))
    TrainConfig(), SearchConfig(target_macs=5e6)   # the defaults are in range


# -- 2. import of a callable that exits or returns something else ---------------------------------
def test_import_of_a_callable_that_exits_or_returns_no_module(cli, tmp_path):
    out = tmp_path / "g.ir"
    assert_one_line_error(cli("import", "sys:exit", "--out", out), "sys:exit()", "SystemExit", "torch.nn.Module")
    nets = tmp_path / "nets.py"
    nets.write_text("import sys\n\ndef number():\n    return 42\n\ndef quits():\n    sys.exit(3)\n")
    assert_one_line_error(cli("import", f"{nets}:number", "--out", out), "returned int, not a torch.nn.Module")
    assert_one_line_error(cli("import", f"{nets}:quits", "--out", out), "SystemExit: 3")
    bye = tmp_path / "bye.py"
    bye.write_text("raise SystemExit(0)\n")
    assert_one_line_error(cli("import", f"{bye}:build", "--out", out), "importing", "SystemExit")
    assert not out.exists() and not (tmp_path / "g.weights.pt").exists()


# -- 3. model folders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model folder (AutoNL-S, 32x32, width 0.35, 10 classes) as save_model writes it."""
    graph = build_preset("autonl-s", resolution=32, width=0.35, num_classes=10)
    torch.manual_seed(0)
    return save_model(graph, to_torch(graph).eval(), tmp_path_factory.mktemp("models") / "m")


def _copy(model_dir, tmp_path):
    return Path(shutil.copytree(model_dir, tmp_path / "m"))


def _edit_weights(folder, key, edit):
    state = torch.load(folder / "weights.pt", weights_only=True)
    state[key] = edit(state[key])
    torch.save(state, folder / "weights.pt")


@pytest.mark.parametrize("edit, says", [
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "holds 27 non-finite values (NaN) among its 432"),
    (lambda t: t.index_fill(0, torch.tensor([1]), float("inf")), "holds 27 non-finite values (inf) among its 432"),
    (lambda t: t.double(), "is float64 in the file but float32 in graph 'autonl_s'"),
])
def test_model_folder_weights_must_be_finite_and_of_the_modules_dtype(cli, model_dir, tmp_path, edit, says):
    folder = _copy(model_dir, tmp_path)
    _edit_weights(folder, "stem.weight", edit)
    line = assert_one_line_error(cli("eval", folder, "--data", "digits", "--val-size", "8"),
                                 f"{folder / 'weights.pt'}: stem.weight ", says)
    out = tmp_path / "deploy"
    assert assert_one_line_error(cli("compile", folder, "--out", out)) == line
    assert not out.exists()


def test_a_float16_tensor_is_not_cast_silently(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path)
    _edit_weights(folder, "classifier.bias", lambda t: t.half())
    with pytest.raises(AutonlError, match=r"weights.pt: classifier.bias is float16 in the file but float32"):
        load_model(folder)


def test_graph_ir_must_agree_with_graph_json(cli, model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path)
    text = (folder / "graph.ir").read_text()
    assert "k=5, s=2" in text
    (folder / "graph.ir").write_text(text.replace("k=5, s=2", "k=3, s=2", 1))
    says = (f"{folder / 'graph.ir'}: disagrees with graph.json, the authoritative graph of a model folder",
            "k 5 -> 3", "delete graph.ir or rewrite it from graph.json")
    assert_one_line_error(cli("eval", folder, "--data", "digits", "--val-size", "8"), *says)
    out = tmp_path / "deploy"
    assert_one_line_error(cli("compile", folder, "--out", out), *says)
    run = tmp_path / "run"
    assert_one_line_error(cli("train", folder, "--data", "digits", "--steps", "1", "--out", run), *says)
    assert not out.exists() and not run.exists()
    (folder / "graph.ir").unlink()          # graph.json alone is a model folder still
    load_model(folder)


# -- 4. images over the pixel limit -----------------------------------------------------------------
def solid_png(path: Path, width: int, height: int) -> Path:
    """A grey PNG of one colour, written without holding its pixels (100 megapixels: ~0.4 MB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    row = bytes(width + 1)                   # filter byte 0, then the row
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def small_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for ci, c in enumerate(("a", "b")):
            for i in range(3):
                arr = np.random.default_rng(10 * ci + i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
                (root / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


def test_a_100_megapixel_image_is_refused_like_a_corrupt_one(cli, tmp_path):
    root = small_folder(tmp_path / "ds")
    big = solid_png(root / "train" / "a" / "big.png", 10_000, 10_000)
    says = (f"image '{big}' is too large: 10000x10000 = 100,000,000 pixels, over the limit of 64,000,000 "
            f"pixels (set AUTONL_MAX_IMAGE_PIXELS to change it); pass --skip-corrupt to go on")
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # not Pillow's DecompressionBombWarning: an error
        with pytest.raises(AutonlError) as e:
            make_loaders(str(root), 32, 2, workers=0)
    assert str(e.value) == says
    with pytest.warns(CorruptImageWarning, match=f"skipped 1 oversized image in {root}/train"):
        train, _, _ = make_loaders(str(root), 32, 2, workers=0, skip_corrupt=True)
    assert str(big) not in set(train.dataset.paths) and len(train.dataset) == 6
    run = tmp_path / "run"
    assert_one_line_error(cli("train", "mobilenetv2", "--data", root, "--out", run, "-r", "32", "-w", "0.35",
                              "--workers", "0", "--steps", "1"), says)
    assert not run.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_the_pixel_limit_is_set_by_the_environment(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(image_folder, "_PARALLEL_MIN_FILES", 1)   # check in worker processes when there are
    monkeypatch.setattr(image_folder, "_CACHE_MIN_FILES", 1)      # and remember the verdict
    root = small_folder(tmp_path / "ds")
    Image.new("RGB", (20, 10), (9, 9, 9)).save(root / "train" / "b" / "wide.png")
    make_loaders(str(root), 32, 2, workers=workers)               # 200 pixels: under the default
    monkeypatch.setenv("AUTONL_MAX_IMAGE_PIXELS", "150")          # another limit: not the cached verdict
    with pytest.raises(AutonlError) as e:
        make_loaders(str(root), 32, 2, workers=workers)
    assert str(e.value) == (f"image '{root}/train/b/wide.png' is too large: 20x10 = 200 pixels, over the limit "
                            f"of 150 pixels (set AUTONL_MAX_IMAGE_PIXELS to change it); pass --skip-corrupt to go on")
    monkeypatch.setenv("AUTONL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(AutonlError, match=r"^AUTONL_MAX_IMAGE_PIXELS='lots': expected a positive whole number"):
        make_loaders(str(root), 32, 2, workers=workers)


def test_an_image_of_extreme_aspect_is_not_resized_whole(monkeypatch):
    asked = []

    def recording_resize(img, size):
        asked.append(tuple(size))
        raise StopIteration

    monkeypatch.setattr(transforms, "resize", recording_resize)
    strip = torch.zeros(3, 1, 1_000_000, dtype=torch.uint8)      # 1 megapixel, 1 pixel high
    with pytest.raises(StopIteration):
        EvalTransform(32)(strip)
    (h, w), = asked
    assert h == 37 and w <= 4 * 37      # not 37 x 37,000,000
