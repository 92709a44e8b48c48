"""Data loading of the torch backend: folders, built-in datasets, determinism, user errors."""
import io
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autonl.backends.torch import data as D
from autonl.backends.torch.data import image_folder
from autonl.backends.torch.data.image_folder import scan_image_folder
from autonl.backends.torch.data import (BUILTIN_DATASETS, IMAGENET_MEAN, IMAGENET_STD, CorruptImageWarning,
                                        EvalTransform, LongRangeDataset, describe, make_loaders,
                                        random_resized_crop_box)
from autonl.ir import AutonlError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTONL_CACHE_DIR", str(tmp_path / "cache"))


def _image(path: Path, size=(40, 30), colour=None, seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    w, h = size
    arr = (np.full((h, w, 3), colour, np.uint8) if colour is not None
           else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_folder(root: Path, classes=("cat", "dog", "emu"), n_train=4, n_val=2, colour=None,
                exts=(".png", ".jpg", ".jpeg", ".bmp", ".webp")):
    for split, n in (("train", n_train), ("val", n_val)):
        for ci, c in enumerate(classes):
            for i in range(n):
                size = (24 + 7 * i, 20 + 5 * ci)  # mixed sizes and aspect ratios
                _image(root / split / c / f"im{i}{exts[(i + ci) % len(exts)]}", size, colour, seed=ci * 100 + i)
    return root


def assert_one_line(exc_info, expected=None):
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    if expected is not None:
        assert msg == expected
    return msg


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


# ----------------------------------------------------------------------------- batches
@pytest.mark.parametrize("data", ["digits", "longrange", "folder"])
def test_batches_have_the_promised_shapes_and_types(tmp_path, data):
    src = str(make_folder(tmp_path / "ds")) if data == "folder" else data
    train, val, n = make_loaders(src, 32, 4, workers=0, train_size=12, val_size=6)
    assert n == {"digits": 10, "longrange": 2, "folder": 3}[data]
    for loader in (train, val):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (4,) and y.dtype == torch.int64
        assert 0 <= int(y.min()) and int(y.max()) < n
        assert torch.isfinite(x).all()
        pixels = x * STD + MEAN  # undoing the normalisation lands in [0, 1]
        assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4
    assert len(train) == 3 and len(val) == 2  # train drops the ragged batch, val keeps it
    assert sum(len(y) for _, y in val) == 6


def test_normalisation_uses_imagenet_statistics(tmp_path):
    root = make_folder(tmp_path / "ds", classes=("a", "b"), colour=(255, 128, 0),
                       exts=(".png", ".bmp"))  # lossless
    _, val, _ = make_loaders(str(root), 16, 8, workers=0)
    x, _ = next(iter(val))
    expected = (torch.tensor([1.0, 128 / 255, 0.0]).view(3, 1, 1) - MEAN) / STD
    assert torch.allclose(x, expected.expand_as(x), atol=1e-5)


def test_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    ramp = torch.arange(200, dtype=torch.float32).expand(3, 100, 200) / 199  # brightness = x position
    out = EvalTransform(32)(ramp) * STD + MEAN
    assert out.shape == (3, 32, 32)
    # round(32/0.875) = 37 -> 37x74, centre 32 columns: [21, 53) of 74, symmetric about the middle
    centre = out[0].mean().item()
    assert abs(centre - 0.5) < 0.01
    assert torch.all(out[0, 0, 1:] > out[0, 0, :-1])
    assert abs(out[0, 0, 0].item() - 21.5 / 74) < 0.02


def test_random_resized_crop_boxes_stay_inside_with_the_asked_area_and_aspect():
    g = torch.Generator().manual_seed(3)
    for h, w in [(50, 50), (30, 200), (200, 30), (7, 9), (1000, 600)]:
        for _ in range(50):
            top, left, ch, cw = random_resized_crop_box(h, w, g)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    g = torch.Generator().manual_seed(4)
    for _ in range(200):
        top, left, ch, cw = random_resized_crop_box(400, 400, g)
        assert 0.08 * 0.9 <= ch * cw / 160000 <= 1.0
        assert 0.7 <= cw / ch <= 1.4


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_batches_different_seed_different_augmentation(tmp_path):
    root = str(make_folder(tmp_path / "ds"))
    a = make_loaders(root, 24, 4, workers=0, seed=1)[0]
    b = make_loaders(root, 24, 4, workers=0, seed=1)[0]
    c = make_loaders(root, 24, 4, workers=0, seed=2)[0]
    first, second = batches(a), batches(a)  # two epochs of one loader
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(first, batches(b)))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(first, second))  # epochs differ
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(second, batches(b)))
    assert not torch.equal(first[0][0], batches(c)[0][0])
    # same images, same order in val whatever the seed
    va, vc = make_loaders(root, 24, 4, workers=0, seed=1)[1], make_loaders(root, 24, 4, workers=0, seed=2)[1]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(batches(va), batches(vc)))


def test_two_workers_give_exactly_the_batches_of_the_main_process(tmp_path):
    root = str(make_folder(tmp_path / "ds"))
    serial = make_loaders(root, 24, 3, workers=0, seed=5)
    parallel = make_loaders(root, 24, 3, workers=2, seed=5)
    assert parallel[0].num_workers == 2
    for s, p in zip(serial[:2], parallel[:2]):
        for _ in range(2):  # persistent workers: the second epoch too
            got, want = batches(p), batches(s)
            assert len(got) == len(want)
            assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(got, want))


# ----------------------------------------------------------------------------- built-in datasets
def test_longrange_is_balanced_and_a_pure_function_of_the_index():
    ds = LongRangeDataset("train", 200, 32, seed=0, transform=None)
    labels = [ds.label(i) for i in range(200)]
    assert sum(labels) == 100
    again = LongRangeDataset("train", 10, 32, seed=0, transform=None)
    for i in (0, 7, 133):  # no state: any order, any instance
        img, label = ds.render(i)
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and label == labels[i]
        assert torch.equal(again.render(i)[0], img)
    assert not torch.equal(LongRangeDataset("val", 10, 32, 0, None).render(3)[0], ds.render(3)[0])
    assert not torch.equal(LongRangeDataset("train", 10, 32, 1, None).render(3)[0], ds.render(3)[0])


def test_longrange_keys_are_far_apart_and_the_label_says_whether_they_match():
    for res in (32, 64):
        ds = LongRangeDataset("val", 40, res, seed=3, transform=None)
        p = ds.patch
        for i in range(40):
            img, label = ds.render(i)
            white = (img == 255).all(0).numpy()  # key frames are the only pure-white pixels
            keys = [(y, x) for y, x in zip(*np.nonzero(white))
                    if y + p <= res and x + p <= res and white[y, x:x + p].all() and white[y:y + p, x].all()]
            assert len(keys) == 2, keys
            (y0, x0), (y1, x1) = keys
            assert np.hypot(y0 - y1, x0 - x1) >= res / 2
            a, b = (img[:, y + 1:y + p - 1, x + 1:x + p - 1] for y, x in keys)
            assert torch.equal(a, b) == bool(label)


def test_longrange_loader_sizes_and_eval_images_match_render():
    train, val, n = make_loaders("longrange", 32, 10, workers=0, seed=0, train_size=30, val_size=20)
    assert n == 2 and len(train.dataset) == 30 and len(val.dataset) == 20
    x, y = next(iter(val))
    img, label = val.dataset.render(0)
    assert torch.allclose(x[0], (img.float() / 255 - MEAN) / STD) and int(y[0]) == label
    assert len(make_loaders("longrange", 32, 10, workers=0)[0].dataset) == 4000


def test_digits_asset_has_all_images_in_a_fixed_stratified_split():
    train, val, n = make_loaders("digits", 16, 64, workers=0)
    assert n == 10 and train.dataset.classes == [str(d) for d in range(10)]
    tl, vl = train.dataset.labels, val.dataset.labels
    assert len(tl) + len(vl) == 1797 and 0.19 < len(vl) / 1797 < 0.21
    assert np.bincount(tl, minlength=10).min() > 130 and np.bincount(vl, minlength=10).min() > 30
    assert len(make_loaders("digits", 16, 64, workers=0, train_size=100)[0].dataset) == 100
    asset = Path(D.__file__).parent / "assets" / "digits.npz"
    assert asset.stat().st_size < 100_000
    # scikit-learn made the asset; it is never imported at run time
    for module in Path(D.__file__).parents[1].rglob("*.py"):      # the whole torch backend
        assert not re.search(r"^\s*(import|from)\s+sklearn", module.read_text(), re.M), module


def test_describe_is_one_line(tmp_path):
    root = make_folder(tmp_path / "ds")
    assert describe("digits").startswith("digits: ") and "10 classes" in describe("digits")
    assert describe("longrange").startswith("longrange: ")
    assert describe(str(root)) == f"{root}: image folder, 3 classes, 12 train / 6 val images"
    # fashion-mnist reads its label files: tests/test_fashion_mnist.py, with files of its own
    assert all("\n" not in describe(d) for d in BUILTIN_DATASETS if d != "fashion-mnist")


# ----------------------------------------------------------------------------- user errors
def test_unknown_name_lists_the_builtins():
    with pytest.raises(AutonlError) as e:
        make_loaders("digit", 32, 4)
    assert_one_line(e, "unknown dataset 'digit'; did you mean 'digits'? built-in datasets: digits, fashion-mnist, "
                       "longrange (or give the path of an image folder: ROOT/<class>/<image>, or ROOT/train/ and "
                       "ROOT/val/)")
    with pytest.raises(AutonlError) as e:
        describe("imagenet")
    assert "built-in datasets: digits, fashion-mnist, longrange" in assert_one_line(e)


def test_layout_errors_name_what_is_missing(tmp_path):
    missing = tmp_path / "nope"
    cases = [(missing, f"dataset folder '{missing}' does not exist")]
    no_train = tmp_path / "a"
    (no_train / "val" / "x").mkdir(parents=True)
    cases.append((no_train, f"dataset folder '{no_train}' has no train/ subfolder "
                            f"(expected {no_train}/train/<class>/<image>)"))
    loose = tmp_path / "b"
    _image(loose / "loose.png")  # a flat root, but its images are not in class folders
    cases.append((loose, f"'{loose}' has no class folders (expected {loose}/<class>/<image>, or "
                         f"{loose}/train/<class>/<image>)"))
    no_classes = tmp_path / "c"
    (no_classes / "val").mkdir(parents=True)
    _image(no_classes / "train" / "loose.png")  # an image, but not in a class folder
    cases.append((no_classes, f"'{no_classes}/train' has no class folders (expected {no_classes}/train/<class>/<image>)"))
    empty = make_folder(tmp_path / "d")
    (empty / "train" / "fox").mkdir()
    (empty / "train" / "fox" / "notes.txt").write_text("not an image")
    cases.append((empty, f"class folder '{empty}/train/fox' has no images (.jpg, .jpeg, .png, .bmp, .webp)"))
    mismatch = make_folder(tmp_path / "e")
    _image(mismatch / "val" / "yak" / "1.png")
    cases.append((mismatch, f"'{mismatch}': train/ and val/ have different classes "
                            f"(only in train: -; only in val: yak)"))
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    cases.append((a_file, f"dataset '{a_file}' is not a folder (expected ROOT/<class>/<image>, or "
                          f"ROOT/train/<class>/<image> with ROOT/val/<class>/<image>)"))
    for root, message in cases:
        with pytest.raises(AutonlError) as e:
            make_loaders(str(root), 32, 4, workers=0)
        assert_one_line(e, message)


def test_a_folder_without_validation_images_holds_out_a_stable_stratified_share(tmp_path):
    from autonl.backends.torch.data import data_facts, data_available
    from autonl.backends.torch.data.folder_layout import folder_layout, hold_out

    def split(root):
        classes, samples = scan_image_folder(root)
        return classes, {s: [(str(Path(p).relative_to(root)), y) for p, y in v] for s, v in samples.items()}

    def per_class(pairs, k):
        return [sum(1 for _, y in pairs if y == c) for c in range(k)]

    split_root = make_folder(tmp_path / "split", n_train=10, n_val=0)     # ROOT/train/ alone
    flat = tmp_path / "flat"                                              # ROOT/<class>/ alone
    shutil.copytree(split_root / "train", flat)
    for root, inside in ((split_root, " of train/"), (flat, "")):
        classes, samples = split(root)
        assert classes == ["cat", "dog", "emu"]
        assert per_class(samples["train"], 3) == [8, 8, 8] and per_class(samples["val"], 3) == [2, 2, 2]
        assert not set(samples["train"]) & set(samples["val"])             # held out: never trained on
        assert sorted(samples["train"] + samples["val"]) == sorted(
            (str(p.relative_to(root)), classes.index(p.parent.name)) for p in root.rglob("im*"))
        assert split(root) == (classes, samples)                            # the same every time
        train, val, k = make_loaders(str(root), 32, 4, workers=0)
        assert (len(train.dataset), len(val.dataset), k) == (24, 6, 3)
        assert describe(str(root)).endswith(f"24 train / 6 val images (validation images: 20% of each class folder"
                                            f"{inside} held out (no val/, validation/, valid/, test/ folder), those "
                                            f"whose path in the class folder has the smallest SHA-1)")
        assert data_facts(str(root), 32)["validation"].startswith("validation images: 20% of each class")
        assert data_available(str(root))
    # the flat root holds out the same images as train/ did (chosen by their path in the class
    # folder, not by the root's path or the listing order)
    held = {p.split("/", 1)[1] for p, _ in split(split_root)[1]["val"]}
    assert held == {p for p, _ in split(flat)[1]["val"]}
    # one image more moves at most one other image across
    _image(flat / "cat" / "new.png", seed=77)
    after = {p for p, _ in split(flat)[1]["val"]}
    assert len(after - held - {"cat/new.png"}) + len(held - after) <= 1
    # a validation folder of another common name is used as it is; a class of one image trains
    test_named = make_folder(tmp_path / "tn", n_val=0)
    shutil.copytree(test_named / "train", test_named / "test")
    assert describe(str(test_named)) == f"{test_named}: image folder, 3 classes, 12 train / 12 val images"
    assert data_facts(str(test_named), 32)["validation"] == "validation images: test/"
    # a root with validation images alone serves evaluation (training is refused: test above)
    val_only = tmp_path / "vo"
    shutil.copytree(test_named / "test", val_only / "val")
    assert len(scan_image_folder(val_only, splits=("val",))[1]["val"]) == 12 and data_available(str(val_only))
    assert folder_layout(flat).where("val") == f"{flat} (the 20% of each class held out for validation)"
    assert folder_layout(test_named).where("val") == str(test_named / "test")
    assert hold_out("c", ["c/a.png"]) == (["c/a.png"], [])
    assert [len(hold_out("c", [f"c/{i}.png" for i in range(n)])[1]) for n in (2, 3, 5, 8, 100)] == [1, 1, 1, 2, 20]


def test_an_unreadable_folder_is_a_user_error(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "ds")
    locked, real_scandir = root / "val", os.scandir

    def scandir(path):  # chmod would not stop root, who runs some CI machines
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(AutonlError) as e:
        make_loaders(str(root), 32, 4, workers=0)
    assert_one_line(e, f"cannot read '{locked}': Permission denied")


def test_bad_arguments_are_user_errors():
    for kwargs, message in [(dict(resolution=0), "resolution must be an integer >= 8 (got 0)"),
                            (dict(batch_size=0), "batch_size must be an integer >= 1 (got 0)"),
                            (dict(workers=-1), "workers must be an integer >= 0 (got -1)"),
                            (dict(train_size=0), "train_size must be an integer >= 1 (got 0)")]:
        args = dict(data="digits", resolution=32, batch_size=4) | kwargs
        with pytest.raises(AutonlError) as e:
            make_loaders(**args)
        assert_one_line(e, message)
    with pytest.raises(AutonlError) as e:
        make_loaders("longrange", 8, 4)
    assert_one_line(e, "the longrange dataset needs a resolution of at least 16 (got 8)")


def _truncated_jpeg(path: Path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _corrupt_folder(tmp_path):
    root = make_folder(tmp_path / "ds")
    bad_jpg = _truncated_jpeg(root / "train" / "cat" / "broken.jpg")
    bad_png = root / "val" / "dog" / "noise.png"
    bad_png.write_bytes(np.random.default_rng(2).integers(0, 256, 600, dtype=np.uint8).tobytes())
    return root, bad_jpg, bad_png


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_images_are_named_in_one_line(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(image_folder, "_PARALLEL_MIN_FILES", 1)  # check in worker processes when there are workers
    root, bad_jpg, bad_png = _corrupt_folder(tmp_path)
    with pytest.raises(AutonlError) as e:
        make_loaders(str(root), 32, 4, workers=workers)
    msg = assert_one_line(e)
    assert msg.startswith(f"corrupt or truncated image '{bad_jpg}' (") and "truncated" in msg
    assert msg.endswith("; pass --skip-corrupt to go on")
    bad_jpg.unlink()
    with pytest.raises(AutonlError) as e:
        make_loaders(str(root), 32, 4, workers=workers)
    assert_one_line(e, f"corrupt or truncated image '{bad_png}' (not a recognisable image); "
                       f"pass --skip-corrupt to go on")


def test_skip_corrupt_warns_with_a_count_and_leaves_the_files_out(tmp_path):
    root, bad_jpg, bad_png = _corrupt_folder(tmp_path)
    _truncated_jpeg(root / "train" / "dog" / "also_broken.jpg")
    with pytest.raises(AutonlError) as e:
        make_loaders(str(root), 32, 4, workers=0)
    assert re.fullmatch(rf"corrupt or truncated image '{re.escape(str(bad_jpg))}' \(.+\) and 1 more; "
                        rf"pass --skip-corrupt to go on", assert_one_line(e))
    with pytest.warns(CorruptImageWarning) as w:
        train, val, n = make_loaders(str(root), 32, 4, workers=0, skip_corrupt=True)
    messages = [str(x.message) for x in w]
    assert f"skipped 2 corrupt or truncated images in {root}/train (first: {bad_jpg})" in messages
    assert f"skipped 1 corrupt or truncated image in {root}/val (first: {bad_png})" in messages
    assert len(train.dataset) == 12 and len(val.dataset) == 6 and n == 3
    assert sum(len(y) for _, y in val) == 6


def test_skipping_every_image_of_a_class_is_an_error(tmp_path):
    root = make_folder(tmp_path / "ds", n_train=1)
    for f in (root / "train" / "emu").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(AutonlError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        make_loaders(str(root), 32, 4, workers=0, skip_corrupt=True)
    assert_one_line(e, f"class 'emu' in {root}/train has no readable images left after skipping corrupt ones")


@pytest.mark.parametrize("skip", [False, True])
def test_a_file_broken_after_the_check_is_caught_in_the_workers(tmp_path, skip):
    root = make_folder(tmp_path / "ds")
    _, val, _ = make_loaders(str(root), 32, 3, workers=2, skip_corrupt=skip)
    victim = Path(val.dataset.paths[3])
    victim.write_bytes(b"\x89PNG garbage")
    if not skip:
        with pytest.raises(AutonlError) as e:
            batches(val)
        assert_one_line(e, f"corrupt or truncated image '{victim}' (not a recognisable image); "
                           f"pass --skip-corrupt to go on")
        victim.unlink()  # the loader still works after the error: a new epoch starts cleanly
        with pytest.raises(AutonlError) as e:
            batches(val)
        assert_one_line(e, f"corrupt or truncated image '{victim}' (No such file or directory); "
                           f"pass --skip-corrupt to go on")
    else:
        with pytest.warns(CorruptImageWarning, match="skipped 1 image"):
            assert sum(len(y) for _, y in val) == 5


def test_checking_many_files_shows_progress_and_is_remembered(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(image_folder, "_PROGRESS_MIN_FILES", 1)
    monkeypatch.setattr(image_folder, "_CACHE_MIN_FILES", 1)
    root = make_folder(tmp_path / "ds")
    make_loaders(str(root), 32, 4, workers=0)
    err = capsys.readouterr().err
    assert f"checking {root}/train: 12/12 images (100%)" in err
    assert len(os.listdir(tmp_path / "cache" / "checked-images")) == 2

    def no_decoding(path):
        raise AssertionError("an unchanged folder was decoded again")

    with monkeypatch.context() as m:
        m.setattr(image_folder, "_why_unreadable", no_decoding)
        make_loaders(str(root), 32, 4, workers=0)
    _truncated_jpeg(root / "train" / "cat" / "im0.png")  # a changed file: checked again
    with pytest.raises(AutonlError, match="corrupt or truncated image"):
        make_loaders(str(root), 32, 4, workers=0)
    # a remembered bad file is reported without decoding, under the name given this time
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_folder, "_why_unreadable", no_decoding)
    with pytest.raises(AutonlError) as e:
        make_loaders("ds", 32, 4, workers=0)
    assert str(e.value).startswith("corrupt or truncated image 'ds/train/cat/im0.png' (")
