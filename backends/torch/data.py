"""Data loading for the torch backend: ImageFolder trees and two built-in datasets.

``make_loaders(data, resolution, batch_size, ...)`` returns ``(train, val, num_classes)``;
batches are ``(float32 [N,3,R,R] normalised with ImageNet mean/std, int64 [N])``. ``data`` is

* a folder ``ROOT/{train,val}/<class>/*.{jpg,jpeg,png,bmp,webp}`` (classes sorted by folder
  name; train and val must have the same classes). Train: random resized crop (scale
  0.08..1, ratio 3/4..4/3, bilinear), horizontal flip; eval: shorter side resized to
  ``round(R/0.875)``, centre crop R. Every image is decoded once before training starts.
* ``digits``: the UCI ML hand-written digits (Alpaydin & Kaynak 1998, UCI repository,
  CC BY 4.0) as redistributed by scikit-learn (BSD-3-Clause), 1797 grey 8x8 images of
  0..9 shipped in ``assets/digits.npz`` (made by ``scripts/make_digits_asset.py``; sklearn
  is not needed here). Upscaled to R, grey repeated to RGB; fixed stratified 80/20 split.
  Train: random resized crop (scale 0.6..1), no flip (digits are chiral).
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
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from autonl.ir import AutonlError

from .builtin_data import BUILTIN_DATASETS, LONGRANGE_SIZES, DigitsDataset, LongRangeDataset, digits_arrays
from .config import RESOLUTION, SEED, WORKERS
from .image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, find_unreadable, scan_image_folder
from .loader import CorruptImageWarning, seeded_loader
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, random_resized_crop_box

__all__ = ["BUILTIN_DATASETS", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "CorruptImageWarning",
           "DigitsDataset", "EvalTransform", "ImageFolderDataset", "LongRangeDataset", "TrainTransform",
           "describe", "find_unreadable", "make_loaders", "num_classes", "random_resized_crop_box", "scan_image_folder"]


def _resolve(data: str):
    """'digits' | 'longrange' | Path of an existing folder; else a one-line error."""
    if data in BUILTIN_DATASETS:
        return data
    path = Path(os.path.expanduser(data))
    if path.exists() or any(c in data for c in "/\\~") or data.startswith("."):
        return path  # path-like: scan_image_folder names what is missing
    close = difflib.get_close_matches(data.lower(), BUILTIN_DATASETS, n=1)
    hint = f" did you mean '{close[0]}'?" if close else ""
    raise AutonlError(f"unknown dataset '{data}';{hint} built-in datasets: {', '.join(BUILTIN_DATASETS)} "
                      f"(or give the path of a folder with train/ and val/)")


def num_classes(data: str) -> int:
    """The number of classes of ``data`` without decoding anything (checks the folder layout)."""
    source = _resolve(data)
    if source == "digits":
        return 10
    if source == "longrange":
        return 2
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


def make_loaders(data: str, resolution: int, batch_size: int, workers: int | None = None, seed: int = 0,
                 skip_corrupt: bool = False, train_size: int | None = None, val_size: int | None = None,
                 augment: bool = True, shard: tuple[int, int] = (0, 1)) -> tuple[DataLoader, DataLoader, int]:
    """``(train_loader, val_loader, num_classes)`` for ``data`` (a built-in name or a folder).

    ``train_size``/``val_size`` bound the number of samples (a fixed subset, the same for
    every seed); for ``longrange`` they set its size (default 4000/1000). The train loader
    shuffles and drops a ragged last batch; the val loader keeps order. Same ``seed``, same
    batches, epoch by epoch, whatever ``workers`` is (None: :func:`auto_workers`).
    """
    _check_int("resolution", resolution, 8, RESOLUTION.hi)
    _check_int("batch_size", batch_size, 1)
    workers = auto_workers() if workers is None else workers
    _check_int("workers", workers, 0, WORKERS.hi)
    _check_int("seed", seed, 0, SEED.hi)
    for name, v in (("train_size", train_size), ("val_size", val_size)):
        if v is not None:
            _check_int(name, v, 1)
    src = _resolve(str(data))
    evaluate = EvalTransform(resolution, None if src in BUILTIN_DATASETS else 0.875)
    if src == "digits":
        train_t = TrainTransform(resolution, scale=(0.6, 1.0), flip=False) if augment else evaluate
        train = DigitsDataset("train", resolution, train_t, train_size)
        val = DigitsDataset("val", resolution, evaluate, val_size)
    elif src == "longrange":
        train_t = TrainTransform(resolution, scale=None, flip=True) if augment else evaluate
        train = LongRangeDataset("train", train_size or LONGRANGE_SIZES[0], resolution, seed, train_t)
        val = LongRangeDataset("val", val_size or LONGRANGE_SIZES[1], resolution, seed, evaluate)
    else:
        classes, samples = scan_image_folder(src)
        train_t = TrainTransform(resolution) if augment else evaluate
        common = dict(classes=classes, skip_corrupt=skip_corrupt, workers=workers)
        train = ImageFolderDataset(samples["train"], transform=train_t, what=str(src / "train"),
                                   limit=train_size, **common)
        val = ImageFolderDataset(samples["val"], transform=evaluate, what=str(src / "val"), limit=val_size, **common)
    return (seeded_loader(train, batch_size, True, workers, seed, skip_corrupt, shard),
            seeded_loader(val, batch_size, False, workers, seed, skip_corrupt), len(train.classes))


def describe(data: str) -> str:
    """One line about ``data``: what it is, its classes and split sizes (no decoding)."""
    src = _resolve(str(data))
    if src == "digits":
        split = digits_arrays()[2]
        return (f"digits: UCI hand-written digits 8x8 (via scikit-learn), 10 classes, "
                f"{int((split == 0).sum())} train / {int((split == 1).sum())} val images")
    if src == "longrange":
        return (f"longrange: synthetic same/different pair of distant patches, 2 classes, "
                f"{LONGRANGE_SIZES[0]} train / {LONGRANGE_SIZES[1]} val images by default")
    classes, samples = scan_image_folder(src)
    return (f"{src}: image folder, {len(classes)} classes, "
            f"{len(samples['train'])} train / {len(samples['val'])} val images")
