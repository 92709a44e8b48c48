"""Data loading for the torch backend: ImageFolder trees and three built-in datasets.

``make_loaders(data, resolution, batch_size, ...)`` returns ``(train, val, num_classes)``;
batches are ``(float32 [N,3,R,R] normalised with ImageNet mean/std, int64 [N])``. ``data`` is

* a folder ``ROOT/{train,val}/<class>/*.{jpg,jpeg,png,bmp,webp}`` (classes sorted by folder
  name; train and val must have the same classes). Train: random resized crop (scale
  0.8..1, ratio 3/4..4/3, bilinear), horizontal flip; eval: shorter side resized to R,
  centre crop R (the whole of a square image); all three options (:func:`augmentation`).
  Every image is decoded once before training starts.
* ``digits``: the UCI ML hand-written digits (Alpaydin & Kaynak 1998, UCI repository,
  CC BY 4.0) as redistributed by scikit-learn (BSD-3-Clause), 1797 grey 8x8 images of
  0..9 shipped in ``assets/digits.npz`` (made by ``scripts/make_digits_asset.py``; sklearn
  is not needed here). Upscaled to R, grey repeated to RGB; fixed stratified 80/20 split.
  Train: random resized crop (scale 0.6..1), no flip (digits are chiral).
* ``fashion-mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research, MIT
  licence), 10 classes of grey 28x28 clothing images: train = the 60000 training images,
  val = the 10000 test images. Read from the four gzipped (or plain) IDX files in
  ``$AUTONL_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist`` (Debian's package
  ``dataset-fashion-mnist``), checked and decoded once per process; not shipped (30 MB).
  Resized to R, grey repeated to RGB. Train: random resized crop (scale 0.8..1: the garments
  are centred and fill the frame, and a deeper crop could cut off the sleeves or soles that
  tell classes apart) and horizontal flip (clothes are left-right symmetric).
* ``longrange``: a synthetic same/different task that only relations between distant
  positions solve; see :class:`LongRangeDataset`.

Augmentation draws from a ``torch.Generator`` seeded per sample by the sampler, so a batch
depends on (seed, epoch, position) only, not on the number of workers or their timing.

Images are bounded: one of more than ``$AUTONL_MAX_IMAGE_PIXELS`` pixels (default 64,000,000)
is refused from its header, before decoding, like a corrupt file (named in one line;
``skip_corrupt`` leaves it out); see :mod:`.image_folder`.

This module holds the entry points; the pieces live in :mod:`.transforms`,
:mod:`.image_folder`, :mod:`.builtin_data` and :mod:`.loader`.
"""
from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from autonl.ir import AutonlError

from .builtin_data import (BUILTIN_CLASSES, BUILTIN_DATASETS, LONGRANGE_SIZES, DigitsDataset, FashionMnistDataset,
                           LongRangeDataset, canonical_data, digits_arrays, fashion_mnist_files, fashion_mnist_labels)
from ..config import RESOLUTION, SEED, WORKERS
from .folder_layout import folder_layout
from .image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, find_unreadable, scan_image_folder
from .loader import CorruptImageWarning, seeded_loader, split_holdout
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, random_resized_crop_box

__all__ = ["BUILTIN_DATASETS", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "CorruptImageWarning",
           "DATA_FACTS_FILE", "accuracy_line", "augmentation", "recorded_eval_crop", "data_available", "make_val_loader", "scaled_lr", "chance_level", "data_facts", "fitted_settings", "read_data_facts",
           "DigitsDataset", "EvalTransform", "FashionMnistDataset", "ImageFolderDataset", "LongRangeDataset", "TrainTransform",
           "describe", "find_unreadable", "make_loaders", "num_classes", "random_resized_crop_box", "scan_image_folder"]


def _resolve(data: str):
    """A built-in name ('digits', 'fashion-mnist', 'longrange') | Path of an existing folder;
    else a one-line error."""
    data = canonical_data(data)
    if data in BUILTIN_DATASETS:
        return data
    path = Path(os.path.expanduser(data))
    if path.exists() or any(c in data for c in "/\\~") or data.startswith("."):
        return path  # path-like: scan_image_folder names what is missing
    close = difflib.get_close_matches(data.lower(), BUILTIN_DATASETS, n=1)
    hint = f" did you mean '{close[0]}'?" if close else ""
    raise AutonlError(f"unknown dataset '{data}';{hint} built-in datasets: {', '.join(BUILTIN_DATASETS)} "
                      f"(or give the path of an image folder: ROOT/<class>/<image>, or ROOT/train/ and ROOT/val/)")


def num_classes(data: str) -> int:
    """The number of classes of ``data`` without decoding anything (checks the folder layout,
    or that the files of ``fashion-mnist`` are there)."""
    source = _resolve(data)
    if source == "fashion-mnist":
        for split in ("train", "val"):
            fashion_mnist_files(split)
    if source in BUILTIN_DATASETS:
        return len(BUILTIN_CLASSES[source])
    return len(scan_image_folder(source)[0])


def _check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise AutonlError(f"{name} must be an integer >= {lo} (got {value!r})")
    if hi is not None and value > hi:
        raise AutonlError(f"{name} must be an integer <= {hi} (got {value!r})")


MAX_AUTO_WORKERS = 8


def auto_workers() -> int:
    """Data-loading processes for one training process when none are asked for: this
    machine's CPUs shared by the processes torchrun runs on it (``$LOCAL_WORLD_SIZE``), at
    most 8 (``benchmarks/data_throughput.py`` measures how many one GPU needs)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(MAX_AUTO_WORKERS, cpus // local))


def augmentation(data: str, crop_scale: float | None = None, flip: bool | None = None,
                 eval_crop: float | None = None) -> dict:
    """The augmentation of ``data`` (a built-in name or a folder): what was asked, the rest
    the dataset's default, as ``{"crop_scale", "flip", "eval_crop"}``.

    ``crop_scale``: a training image is a random crop of at least this share of its area
    (aspect 3/4..4/3), resized to the input size; 1: the whole image. ``flip``: random
    horizontal flips. ``eval_crop``: at evaluation the shorter side is resized to
    ``R / eval_crop`` and the centre ``R x R`` taken (1: the whole of a square image); None:
    resized straight to ``R x R`` (the built-in sets, already framed). Defaults: digits 0.6,
    no flip (digits are chiral); fashion-mnist 0.8 with flips; longrange no crop (a crop
    could cut a key out) with flips; an image folder 0.8 with flips and the whole image at
    evaluation: mild enough that a small image keeps its layout (ImageNet's 0.08 crop and
    0.875 centre crop cut distant objects out of most small images); a folder whose classes
    a mirror image would swap needs ``flip=False`` (``--no-flip``)."""
    src = _resolve(str(data))
    default = {"digits": (0.6, False, None), "fashion-mnist": (0.8, True, None),
               "longrange": (1.0, True, None)}.get(src if isinstance(src, str) else "", (0.8, True, 1.0))
    for name, v in (("crop_scale", crop_scale), ("eval_crop", eval_crop)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1):
            raise AutonlError(f"{name} must be a number in (0, 1], got {v!r}")
    return {"crop_scale": float(default[0] if crop_scale is None else crop_scale),
            "flip": bool(default[1] if flip is None else flip),
            "eval_crop": default[2] if eval_crop is None else float(eval_crop)}


def recorded_eval_crop(facts: dict | None, data: str) -> float | None:
    """The evaluation crop a model was trained with, from its ``data.json`` (``facts``): its
    ``augmentation.eval_crop``; a record from before augmentation was kept: what was then
    the rule (a folder's 0.875 centre crop, a built-in set resized straight); no record:
    the dataset's default."""
    if facts is None:
        return augmentation(data)["eval_crop"]
    aug = facts.get("augmentation")
    if isinstance(aug, dict) and "eval_crop" in aug:
        crop = aug["eval_crop"]
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1):
            raise AutonlError(f"data.json: augmentation.eval_crop must be null or a number in (0, 1], got {crop!r}")
        return crop
    return None if _resolve(str(data)) in BUILTIN_DATASETS else 0.875


def make_loaders(data: str, resolution: int, batch_size: int, workers: int | None = None, seed: int = 0,
                 skip_corrupt: bool = False, train_size: int | None = None, val_size: int | None = None,
                 augment: bool = True, shard: tuple[int, int] = (0, 1),
                 holdout: int | None = None, crop_scale: float | None = None, flip: bool | None = None,
                 eval_crop: float | None = None) -> tuple[DataLoader, DataLoader, int]:
    """``(train_loader, val_loader, num_classes)`` for ``data`` (a built-in name or a folder).

    ``train_size``/``val_size`` bound the number of samples (a fixed subset, the same for
    every seed); for ``longrange`` they set its size (default 4000/1000). ``fashion-mnist``
    reads its four files here, before any training starts (a missing or corrupt one: one
    line). The train loader shuffles and drops a ragged last batch; the val loader keeps order. Same ``seed``, same
    batches, epoch by epoch, whatever ``workers`` is (None: :func:`auto_workers`).
    ``holdout``: that many training images (a fixed choice) become the validation loader,
    without augmentation, and leave the training one; the validation split is not read.
    ``crop_scale``, ``flip``, ``eval_crop``: :func:`augmentation` (None: the dataset's default).
    """
    _check_int("resolution", resolution, 8, RESOLUTION.hi)
    _check_int("batch_size", batch_size, 1)
    workers = auto_workers() if workers is None else workers
    _check_int("workers", workers, 0, WORKERS.hi)
    _check_int("seed", seed, 0, SEED.hi)
    for name, v in (("train_size", train_size), ("val_size", val_size), ("holdout", holdout)):
        if v is not None:
            _check_int(name, v, 1)
    src = _resolve(str(data))
    aug = augmentation(src, crop_scale, flip, eval_crop)
    evaluate = EvalTransform(resolution, aug["eval_crop"])
    train_t = TrainTransform(resolution, scale=None if aug["crop_scale"] >= 1 else (aug["crop_scale"], 1.0),
                             flip=aug["flip"]) if augment else evaluate
    if src == "digits":
        train = DigitsDataset("train", resolution, train_t, train_size)
        val = DigitsDataset("val", resolution, evaluate, val_size) if holdout is None else None
    elif src == "fashion-mnist":
        train = FashionMnistDataset("train", resolution, train_t, train_size)
        val = FashionMnistDataset("val", resolution, evaluate, val_size) if holdout is None else None
    elif src == "longrange":
        train = LongRangeDataset("train", train_size or LONGRANGE_SIZES[0], resolution, seed, train_t)
        val = LongRangeDataset("val", val_size or LONGRANGE_SIZES[1], resolution, seed, evaluate) \
            if holdout is None else None
    else:
        classes, samples = scan_image_folder(src)
        layout = folder_layout(src)
        common = dict(classes=classes, skip_corrupt=skip_corrupt, workers=workers)
        train = ImageFolderDataset(samples["train"], transform=train_t, what=layout.where("train"),
                                   limit=train_size, **common)
        val = ImageFolderDataset(samples["val"], transform=evaluate, what=layout.where("val"), limit=val_size,
                                 **common) if holdout is None else None
    if holdout is not None:
        train, val = split_holdout(train, holdout, evaluate)
    return (seeded_loader(train, batch_size, True, workers, seed, skip_corrupt, shard),
            seeded_loader(val, batch_size, False, workers, seed, skip_corrupt), len(train.classes))


def make_val_loader(data: str, resolution: int, batch_size: int, workers: int | None = None,
                    skip_corrupt: bool = False, val_size: int | None = None,
                    eval_crop: float | None = None) -> tuple[DataLoader, list[str]]:
    """``(validation loader, class names)``: what evaluation needs, and only that (a folder
    needs no train/ split, and no training image is read). ``eval_crop``: as
    :func:`augmentation` (None: the dataset's default)."""
    _check_int("resolution", resolution, 8, RESOLUTION.hi)
    _check_int("batch_size", batch_size, 1)
    workers = auto_workers() if workers is None else workers
    src = _resolve(str(data))
    if src == "fashion-mnist":      # the test images only: the 60000 training images are not decoded
        _check_int("workers", workers, 0, WORKERS.hi)
        if val_size is not None:
            _check_int("val_size", val_size, 1)
        val = FashionMnistDataset("val", resolution, EvalTransform(resolution, eval_crop), val_size)
        return seeded_loader(val, batch_size, False, workers, 0, skip_corrupt), list(val.classes)
    if src in BUILTIN_DATASETS:
        _, val, _ = make_loaders(src, resolution, batch_size, workers, skip_corrupt=skip_corrupt,
                                 train_size=1, val_size=val_size, eval_crop=eval_crop)
        return val, list(val.dataset.classes)
    classes, samples = scan_image_folder(src, splits=("val",))
    crop = augmentation(src, eval_crop=eval_crop)["eval_crop"]
    val = ImageFolderDataset(samples["val"], transform=EvalTransform(resolution, crop),
                             what=folder_layout(src, ("val",)).where("val"),
                             limit=val_size, classes=classes, skip_corrupt=skip_corrupt, workers=workers)
    return seeded_loader(val, batch_size, False, workers, 0, skip_corrupt), classes


def describe(data: str) -> str:
    """One line about ``data``: what it is, its classes and split sizes (no image decoded;
    ``fashion-mnist``'s counts are those of its label files)."""
    src = _resolve(str(data))
    if src == "digits":
        split = digits_arrays()[2]
        return (f"digits: UCI hand-written digits 8x8 (via scikit-learn), 10 classes, "
                f"{int((split == 0).sum())} train / {int((split == 1).sum())} val images")
    if src == "fashion-mnist":
        return (f"fashion-mnist: Zalando's Fashion-MNIST 28x28 grey clothing images, 10 classes, "
                f"{len(fashion_mnist_labels('train'))} train / {len(fashion_mnist_labels('val'))} val (test) images")
    if src == "longrange":
        return (f"longrange: synthetic same/different pair of distant patches, 2 classes, "
                f"{LONGRANGE_SIZES[0]} train / {LONGRANGE_SIZES[1]} val images by default")
    classes, samples = scan_image_folder(src)
    layout = folder_layout(src)
    held = f" ({layout.split_text()})" if layout.held_out else ""
    return (f"{src}: image folder, {len(classes)} classes, "
            f"{len(samples['train'])} train / {len(samples['val'])} val images{held}")


# -- settings fitted to the data -----------------------------------------------------------
FIT_EPOCHS = 40                 # passes over the training images a short run aims for
FIT_STEPS = (150, 1000)         # ... within these bounds
FIT_RESOLUTION_CAP = {"cpu": 64, "gpu": 224}
_SIZE_SAMPLE = 512              # image headers read to estimate the size (not every file)

# A short CPU run on Fashion-MNIST: 32 px, the smallest multiple of 8 that holds its 28x28
# images; batch 32, as the digits; 300 steps, twice the digits' 150 for a larger, harder set
# (9600 images, a sixth of an epoch of the 60000: about 40 epochs, as a folder gets, would be
# 75000 steps, hours on a CPU). A step costs what it costs on the digits (same size, same
# batch): a 20-step search at batch 32 on 2 CPU cores ran at about 3 steps/s after its warm-up
# and reached 0.38 validation accuracy (chance 0.10).
FASHION_MNIST_FIT = {
    "resolution": 32, "batch_size": 32, "search_steps": 300, "train_steps": 300,
    "why": "fashion-mnist's 28x28 images at 32 px; batch 32 and 300 steps, twice the digits' 150 (9600 images, "
           "a sixth of an epoch of its 60000 training images), to keep a CPU run short; more steps give more "
           "accuracy (--search-steps, --train-steps)",
}


def _median_short_side(paths: list[str]) -> int | None:
    from PIL import Image

    from .image_folder import open_image_file

    step = max(1, len(paths) // _SIZE_SAMPLE)
    sides = []
    for p in paths[::step][:_SIZE_SAMPLE]:
        try:
            with warnings.catch_warnings():    # a huge image is the data check's to report, not this sample's
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with open_image_file(p) as f, Image.open(f) as im:     # the header only; never a FIFO
                    sides.append(min(im.size))
        except Exception:  # noqa: BLE001 - a bad file is reported by the data check, not here
            continue
    return int(np.median(sides)) if sides else None


def scaled_lr(lr: float, batch: int, reference: int = 64) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr`` was chosen for batch ``reference``."""
    return lr * batch / reference


def fitted_settings(data: str, gpu: bool = False) -> dict:
    """Resolution, batch size and step counts for a short run on ``data``, with the reason
    for each (printed by ``autonl run``): ``digits`` and ``longrange`` keep the settings they
    were tuned with; ``fashion-mnist`` gets :data:`FASHION_MNIST_FIT` (a short CPU run over a
    part of its 60000 training images); a folder gets its images' median shorter side (a
    multiple of 8, at least 32, at most 64 on a CPU and 224 on a GPU), batch 32 (16 below 256 training images) and about
    ``FIT_EPOCHS`` epochs of steps, within ``FIT_STEPS``. Learning rates follow the batch
    (:func:`scaled_lr` of the defaults, set for batch 64): at batch 16 the default 0.1
    diverged in the first steps and left MobileNetV2 at chance on a small folder."""
    src = _resolve(str(data))
    if src == "fashion-mnist":
        return dict(FASHION_MNIST_FIT)
    if src in BUILTIN_DATASETS:
        return {"resolution": 32, "batch_size": 32, "search_steps": 150, "train_steps": 150,
                "why": f"the settings the built-in '{src}' set was tuned with"}
    _, samples = scan_image_folder(src)
    n = len(samples["train"])
    side = _median_short_side([p for p, _ in samples["train"]])
    cap = FIT_RESOLUTION_CAP["gpu" if gpu else "cpu"]
    resolution = max(32, min(cap, (side or 32) // 8 * 8))
    batch = 32 if n >= 256 else 16
    steps = max(FIT_STEPS[0], min(FIT_STEPS[1], -(-FIT_EPOCHS * n // batch)))
    why = (f"median shorter side {side} px (sampled), at most {cap} on a {'GPU' if gpu else 'CPU'}; "
           f"batch {batch} for {n} training images; {steps} steps = about "
           f"{steps * batch / max(n, 1):.0f} epochs (aiming at {FIT_EPOCHS}, within {FIT_STEPS[0]}..{FIT_STEPS[1]})")
    return {"resolution": resolution, "batch_size": batch, "search_steps": steps, "train_steps": steps, "why": why}


def chance_level(data: str) -> tuple[float, int]:
    """``(share of the most common class in the validation split, classes)``: the accuracy
    of always answering that class (no decoding)."""
    src = _resolve(str(data))
    if src == "digits":
        labels, split = digits_arrays()[1:]
        counts = np.bincount(labels[split == 1], minlength=10)
        return float(counts.max() / counts.sum()), 10
    if src == "fashion-mnist":
        counts = np.bincount(fashion_mnist_labels("val"), minlength=10)
        return float(counts.max() / counts.sum()), 10
    if src == "longrange":
        return 0.5, 2
    classes, samples = scan_image_folder(src, splits=("val",))
    counts = np.bincount([label for _, label in samples["val"]], minlength=len(classes))
    return float(counts.max() / max(1, counts.sum())), len(classes)


def accuracy_line(acc: float, data: str, margin: float = 0.05) -> tuple[str, str | None]:
    """``("val acc 0.512 (chance 0.250, 4 classes)", warning or None)``: the warning when the
    accuracy is within ``margin`` of chance."""
    chance, k = chance_level(data)
    line = f"val acc {acc:.3f} (chance {chance:.3f}, {k} classes)"
    warn = None
    if acc < chance + margin:
        warn = (f"warning: validation accuracy {acc:.3f} is within {margin * 100:.0f} points of chance ({chance:.3f}): "
                f"the network has not learnt this data; train longer (--train-steps), at a higher resolution (-r), "
                f"or check the labels")
    return line, warn


DATA_FACTS_FILE = "data.json"


def data_facts(data: str, resolution: int, aug: dict | None = None) -> dict:
    """What a deployed model needs to know about its input, kept beside its weights (every
    model folder's ``data.json``) and copied into every deploy manifest and board README:
    the dataset, the class names in output order, the preprocessing that produced the
    validation tensors (:class:`EvalTransform`) and the training's augmentation (``aug``,
    :func:`augmentation`; None: the dataset's defaults)."""
    src = _resolve(str(data))
    r = resolution
    aug = aug or augmentation(src)
    if src in BUILTIN_DATASETS:
        classes = BUILTIN_CLASSES[src]
        name, split = src, None
    else:
        classes = scan_image_folder(src)[0]
        name = str(Path(src).resolve())
        split = folder_layout(src).split_text()
    if aug["eval_crop"] is None:
        resize_ = f"resized to {r}x{r} (bilinear, antialiased)"
    else:
        short = int(round(r / aug["eval_crop"]))
        resize_ = (f"shorter side resized to {short} (bilinear, antialiased), then the centre {r}x{r} crop")
    return {
        "format": "autonl-data", "version": 1, "data": name, "classes": classes,
        **({"validation": split} if split else {}),
        "input": {"layout": "NCHW", "dtype": "float32", "shape": ["N", 3, r, r], "channel_order": "RGB",
                  "resize": resize_,
                  "colour": "every image converted to RGB first (grey repeated, CMYK and palette converted, "
                            "alpha dropped)",
                  "scale": "pixel values / 255, to [0, 1]",
                  "normalize": "(x - mean) / std per channel", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "output": {"meaning": "logits, one per class in the order of 'classes' (argmax: the predicted class)"},
        "augmentation": {**aug, "meaning": "training: a random crop of at least crop_scale of the area (1: none), "
                                           "random horizontal flips if flip; evaluation: input.resize"},
    }


def data_available(data: str) -> bool:
    """Whether ``data`` (a built-in name or a folder path, as recorded) can be read here:
    ``fashion-mnist`` only where its files are (:func:`fashion_mnist_files`)."""
    if data == "fashion-mnist":
        try:
            for split in ("train", "val"):
                fashion_mnist_files(split)
        except AutonlError:
            return False
        return True
    if data in BUILTIN_DATASETS:
        return True
    try:
        folder_layout(data, ("val",))       # what the checks on real images read
    except AutonlError:
        return False
    return True


def read_data_facts(folder: str | Path, graph=None) -> dict | None:
    """A model folder's ``data.json``, or None when it has none (a model imported from
    PyTorch, or written before data facts were kept); checked against its schema, and
    against ``graph`` (its class count) when given (:mod:`.facts`)."""
    from .facts import check_facts_fit, read_facts_file

    path = Path(folder) / DATA_FACTS_FILE
    if not os.path.lexists(path):
        return None
    facts = read_facts_file(path)
    return check_facts_fit(facts, graph, path) if graph is not None else facts
