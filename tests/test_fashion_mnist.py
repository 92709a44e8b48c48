"""The built-in ``fashion-mnist``: read from IDX files (tiny ones written here, the real ones
when Debian's package is installed), batches, limits, facts, and every bad file as one line."""
import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from autonl.backends.torch.data import builtin_data
from autonl.backends.torch.data import (IMAGENET_MEAN, IMAGENET_STD, chance_level, data_available, data_facts,
                                        describe, fitted_settings, make_loaders, make_val_loader, num_classes)
from autonl.backends.torch.data.transforms import resize
from autonl.ir import AutonlError
from helpers import assert_one_line_error

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
REAL = builtin_data.FASHION_MNIST_DIR
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_images(images: np.ndarray, magic=2051) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", magic, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic=2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def tiny_set(folder: Path, n_train=40, n_val=20, gz=True, seed=0) -> Path:
    """Fashion-MNIST's four files with random 28x28 images, labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for stem, raw in zip(FILES[split], (idx_images(images), idx_labels(np.arange(n) % 10))):
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, mtime=0))
            else:
                (folder / stem).write_bytes(raw)
    return folder


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    folder = tiny_set(tmp_path / "fashion")
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(folder))
    return folder


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loaders_give_rgb_batches_at_the_resolution_and_the_ten_clothing_classes(tiny):
    train, val, n = make_loaders("fashion-mnist", 16, 8, workers=0)
    assert n == 10 == num_classes("fashion-mnist")
    assert train.dataset.classes == CLASSES and val.dataset.classes == CLASSES
    assert len(train.dataset) == 40 and len(val.dataset) == 20
    for loader in (train, val):
        x, y = next(iter(loader))
        assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
        assert y.shape == (8,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
        pixels = x * STD + MEAN
        assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4
        assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5)   # grey repeated to RGB
        assert torch.allclose(pixels[:, 0], pixels[:, 2], atol=1e-5)
    assert len(train) == 5 and sum(len(y) for _, y in val) == 20
    # evaluation: the file's image, /255, resized, nothing else (labels in file order)
    images = np.frombuffer(gzip.decompress((tiny / "t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8,
                           offset=16).reshape(-1, 28, 28)
    x, y = next(iter(val))
    want = resize(torch.tensor(images[3], dtype=torch.float32).div(255).unsqueeze(0), (16, 16))
    assert torch.allclose((x[3] * STD + MEAN)[0], want[0], atol=1e-5) and y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    val_only, classes = make_val_loader("fashion-mnist", 16, 8, workers=0, val_size=12)
    assert classes == CLASSES and len(val_only.dataset) == 12


def test_train_and_val_size_keep_a_fixed_subset_and_a_seed_gives_the_same_batches(tiny):
    a_train, a_val, _ = make_loaders("fashion-mnist", 16, 4, workers=0, seed=0, train_size=12, val_size=7)
    b_train, b_val, _ = make_loaders("fashion-mnist", 16, 4, workers=0, seed=1, train_size=12, val_size=7)
    assert len(a_train.dataset) == 12 and len(a_val.dataset) == 7
    # the same images whatever the seed
    assert np.array_equal(a_train.dataset.index, b_train.dataset.index)
    assert np.array_equal(a_val.dataset.index, b_val.dataset.index)
    assert len(set(a_train.dataset.index.tolist())) == 12 and a_train.dataset.index.max() < 40
    # same seed, same batches (augmentation included), also from a worker process
    again, _, _ = make_loaders("fashion-mnist", 16, 4, workers=1, seed=0, train_size=12, val_size=7)
    first = batches(a_train)
    for (xa, ya), (xb, yb) in zip(first, batches(again)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = batches(b_train)
    assert any(not torch.equal(xa, xb) for (xa, _), (xb, _) in zip(first, other))
    # augmentation: a crop of at least 0.8 of the area and flips; evaluation does neither
    unaugmented, _, _ = make_loaders("fashion-mnist", 16, 4, workers=0, seed=0, train_size=12, augment=False)
    assert any(not torch.equal(xa, xb) for (xa, _), (xb, _) in zip(first, batches(unaugmented)))


def test_plain_idx_files_without_gz_read_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(tiny_set(tmp_path / "gz", seed=3)))
    zipped = batches(make_loaders("fashion-mnist", 16, 5, workers=0)[1])
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(tiny_set(tmp_path / "plain", gz=False, seed=3)))
    plain = batches(make_loaders("fashion-mnist", 16, 5, workers=0)[1])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(zipped, plain))
    # each folder its own data: a cache keyed by the path, not by the name
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(tiny_set(tmp_path / "other", n_val=15, seed=4)))
    assert len(make_loaders("fashion-mnist", 16, 5, workers=0)[1].dataset) == 15


def test_describe_chance_facts_and_settings(tiny):
    assert describe("fashion-mnist") == ("fashion-mnist: Zalando's Fashion-MNIST 28x28 grey clothing images, "
                                         "10 classes, 40 train / 20 val (test) images")
    assert chance_level("fashion-mnist") == (pytest.approx(0.1), 10)
    facts = data_facts("fashion-mnist", 32)
    assert facts["data"] == "fashion-mnist" and facts["classes"] == CLASSES
    assert facts["input"]["resize"] == "resized to 32x32 (bilinear, antialiased)"
    fitted = fitted_settings("fashion-mnist")
    assert fitted["resolution"] == 32 and fitted["batch_size"] in (32, 64)
    assert 100 <= fitted["search_steps"] <= 1000 and 100 <= fitted["train_steps"] <= 1000
    assert "60000" in fitted["why"] and "\n" not in fitted["why"]
    assert data_available("fashion-mnist")


def test_missing_files_are_one_line_that_says_how_to_get_them(tmp_path, monkeypatch, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(empty))
    assert not data_available("fashion-mnist")
    for call in (lambda: make_loaders("fashion-mnist", 16, 4, workers=0), lambda: num_classes("fashion-mnist"),
                 lambda: describe("fashion-mnist"), lambda: chance_level("fashion-mnist")):
        with pytest.raises(AutonlError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and re.search(r"no (train|t10k)-(images-idx3|labels-idx1)-ubyte\.gz", msg), msg
        for part in (str(empty), "apt-get install dataset-fashion-mnist", "AUTONL_FASHION_MNIST"):
            assert part in msg, (part, msg)
    # a set with its test labels missing: named too
    partial = tiny_set(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("AUTONL_FASHION_MNIST", str(partial))
    assert not data_available("fashion-mnist")
    with pytest.raises(AutonlError, match="no t10k-labels-idx1-ubyte.gz"):
        make_loaders("fashion-mnist", 16, 4, workers=0)
    # through the command line: exit != 0, one line, and no run folder
    run = tmp_path / "run"
    proc = cli("train", "mobilenetv2", "--data", "fashion-mnist", "-r", "16", "-w", "0.35", "--steps", "2",
               "--workers", "0", "--out", run, env={"AUTONL_FASHION_MNIST": str(empty)})
    assert_one_line_error(proc, "dataset-fashion-mnist", str(empty))
    assert not run.exists()


def _corrupt(folder: Path, how: str) -> str:
    """Break one file of ``folder`` ``how``; return the fragment the error must hold."""
    images = folder / "train-images-idx3-ubyte.gz"
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    if how == "magic":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(struct.pack(">I", 2049) + raw[4:]))
        return "magic number 2049, expected 2051"
    if how == "truncated gzip":
        images.write_bytes(images.read_bytes()[:200])
        return "cannot read"
    if how == "not gzip":
        labels.write_bytes(b"these are not the labels you are looking for")
        return "cannot read"
    if how == "short data":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[:-28]))
        return "where the header promises"
    if how == "size":
        images.write_bytes(gzip.compress(idx_images(np.zeros((40, 32, 32), np.uint8))))
        return "images of 32x32 pixels, expected 28x28"
    if how == "label":
        labels.write_bytes(gzip.compress(idx_labels(np.full(20, 10))))
        return "label 10, expected 0..9"
    if how == "count":
        labels.write_bytes(gzip.compress(idx_labels(np.arange(19) % 10)))
        return "19 labels for the 20 images"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["magic", "truncated gzip", "not gzip", "short data", "size", "label", "count"])
def test_a_corrupt_file_is_one_line_naming_it(tiny, how):
    fragment = _corrupt(tiny, how)
    with pytest.raises(AutonlError) as e:
        make_loaders("fashion-mnist", 16, 4, workers=0)
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg, msg
    assert str(tiny) in msg and "dataset-fashion-mnist" in msg


def test_a_corrupt_file_stops_the_command_line_with_one_line(tiny, cli, tmp_path):
    _corrupt(tiny, "truncated gzip")
    run = tmp_path / "run"
    proc = cli("train", "mobilenetv2", "--data", "fashion-mnist", "-r", "16", "-w", "0.35", "--steps", "2",
               "--workers", "0", "--out", run)
    assert_one_line_error(proc, str(tiny / "train-images-idx3-ubyte.gz"), "cannot read")
    assert not run.exists()


def test_train_and_eval_on_fashion_mnist_end_to_end(tiny, cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "mobilenetv2", "--data", "fashion-mnist", "-r", "16", "-w", "0.35", "--steps", "2",
               "--batch-size", "8", "--workers", "0", "--eval-every", "2", "--precise-bn", "1", "--out", run,
               check_ok=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 2 and result["val_n"] == 20
    facts = json.loads((run / "model" / "data.json").read_text())
    assert facts["data"] == "fashion-mnist" and facts["classes"] == CLASSES
    evaluated = cli("eval", run, "--workers", "0", check_ok=True)
    assert json.loads(evaluated.stdout)["val_n"] == 20 and "chance 0.100, 10 classes" in evaluated.stderr


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_files(monkeypatch):
    monkeypatch.delenv("AUTONL_FASHION_MNIST", raising=False)
    images, labels = builtin_data.fashion_mnist_arrays("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), [6000] * 10)
    test_images, test_labels = builtin_data.fashion_mnist_arrays("val")
    assert test_images.shape == (10000, 28, 28) and np.array_equal(np.bincount(test_labels), [1000] * 10)
    assert chance_level("fashion-mnist") == (pytest.approx(0.1), 10) and data_available("fashion-mnist")
    train, val, n = make_loaders("fashion-mnist", 16, 32, workers=0)
    assert n == 10 and len(train.dataset) == 60000 and len(val.dataset) == 10000
    for loader in (train, val):
        for k, (x, y) in enumerate(loader):
            assert x.shape == (32, 3, 16, 16) and torch.isfinite(x).all() and 0 <= y.min() and y.max() <= 9
            if k == 3:
                break
