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
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import random
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from autonl.ir import AutonlError

__all__ = ["BUILTIN_DATASETS", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "CorruptImageWarning",
           "DigitsDataset", "EvalTransform", "ImageFolderDataset", "LongRangeDataset", "TrainTransform",
           "describe", "find_unreadable", "make_loaders", "num_classes", "random_resized_crop_box", "scan_image_folder"]

BUILTIN_DATASETS = ("digits", "longrange")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LONGRANGE_SIZES = (4000, 1000)          # default train / val sizes of the synthetic set
DIGITS_ASSET = Path(__file__).resolve().parent / "assets" / "digits.npz"
_SPLIT_IDS = {"train": 0, "val": 1}
_PROGRESS_MIN_FILES = 2000              # below this, checking is quick enough to stay silent
_PARALLEL_MIN_FILES = 256               # below this, starting workers costs more than it saves
_CACHE_MIN_FILES = 1000                 # below this, re-checking is cheaper than remembering
_SKIP_HINT = "pass --skip-corrupt to go on"


class CorruptImageWarning(UserWarning):
    """Corrupt images were left out because ``skip_corrupt`` was set."""


# ----------------------------------------------------------------------------- transforms
def _to_float(img: torch.Tensor) -> torch.Tensor:
    return img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    # antialias: without it, shrinking a large crop aliases badly (torchvision v2 does the same)
    return F.interpolate(img.unsqueeze(0), size=size, mode="bilinear", align_corners=False,
                         antialias=True).squeeze(0)


def _normalize(img: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(3, 1, 1)
    return (img - mean) / std


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi, generator=g))


def random_resized_crop_box(h: int, w: int, g: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop of random area and aspect (Inception style)."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        area = h * w * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, log_lo, log_hi))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return top, left, ch, cw
    # ten misses (extreme aspect): the largest central crop whose aspect lies in range
    if w / h < ratio[0]:
        cw, ch = w, min(h, int(round(w / ratio[0])))
    elif w / h > ratio[1]:
        cw, ch = min(w, int(round(h * ratio[1]))), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class TrainTransform:
    """uint8 or [0,1] float CHW -> normalised float [3,size,size], random from ``g``.

    ``scale=None`` skips the crop (only resize); the crop is taken before the conversion to
    float so that a large photo is never converted whole.
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.scale is not None:
            top, left, h, w = random_resized_crop_box(img.shape[-2], img.shape[-1], g, self.scale, self.ratio)
            img = img[..., top:top + h, left:left + w]
        img = _resize(_to_float(img), (self.size, self.size))
        if self.flip and float(torch.rand((), generator=g)) < 0.5:
            img = img.flip(-1)
        return _normalize(img)


class EvalTransform:
    """Shorter side to ``round(size / crop_fraction)``, centre crop; ``crop_fraction=None``
    resizes straight to ``size x size`` (for images that are already framed, like digits)."""

    def __init__(self, size: int, crop_fraction: float | None = 0.875):
        self.size, self.crop_fraction = size, crop_fraction

    def __call__(self, img: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        s = self.size
        if self.crop_fraction is None:
            return _normalize(_resize(_to_float(img), (s, s)))
        short = int(round(s / self.crop_fraction))
        h, w = img.shape[-2:]
        nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        img = _resize(_to_float(img), (nh, nw))
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return _normalize(img[..., top:top + s, left:left + s])


# ----------------------------------------------------------------------------- datasets
def _sample_key(key) -> tuple[int, int]:
    """Loaders index with ``(index, sample_seed)``; a bare index gets a fixed seed of its own."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), (int(key) * 0x9E3779B97F4A7C15 + 1) % (1 << 63)


class _Unreadable(NamedTuple):
    """Returned (not raised) by a worker for a file that fails to decode; see ``_Loader``."""
    path: str
    reason: str


class _AugmentedDataset(Dataset):
    classes: list[str]
    transform = None

    def load(self, i: int):  # -> (image tensor, label)
        raise NotImplementedError

    def __getitem__(self, key):
        i, sample_seed = _sample_key(key)
        loaded = self.load(i)
        if isinstance(loaded, _Unreadable):
            return loaded
        img, label = loaded
        return self.transform(img, torch.Generator().manual_seed(sample_seed)), label


def _decode(path: str) -> torch.Tensor:
    with warnings.catch_warnings():
        # Pillow warns about e.g. palette transparency on every decode, epoch after epoch
        warnings.simplefilter("ignore", UserWarning)
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _why_unreadable(path: str) -> str:
    """'' when ``path`` decodes fully, else a one-line reason without the path in it."""
    try:
        _decode(path)
        return ""
    except Image.UnidentifiedImageError:
        return "not a recognisable image"
    except Exception as e:  # noqa: BLE001 - any failure to decode makes the file unusable
        if isinstance(e, OSError) and e.errno is not None:  # the file system failed, not the decoder
            return e.strerror or str(e)
        return " ".join(str(e).replace(path, "<file>").split()) or type(e).__name__


def _corrupt_error(path: str, reason: str) -> AutonlError:
    return AutonlError(f"corrupt or truncated image '{path}' ({reason}); {_SKIP_HINT}")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_split(root: Path, split: str) -> tuple[list[str], list[list[str]]]:
    d = root / split
    if not d.is_dir():
        raise AutonlError(f"dataset folder '{root}' has no {split}/ subfolder "
                          f"(expected {root}/{split}/<class>/<image>)")
    classes = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise AutonlError(f"'{d}' has no class folders (expected {d}/<class>/<image>)")
    files = []
    for c in classes:
        found = []
        for dirpath, dirnames, names in os.walk(d / c, followlinks=True):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            found += [os.path.join(dirpath, n) for n in sorted(names) if _is_image(n)]
        if not found:
            raise AutonlError(f"class folder '{d / c}' has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.append(found)
    return classes, files


def scan_image_folder(root) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Check the layout of an ImageFolder root (no decoding): ``(classes, {split: [(path, label)]})``."""
    root = Path(os.path.expanduser(str(root)))
    if not root.exists():
        raise AutonlError(f"dataset folder '{root}' does not exist")
    if not root.is_dir():
        raise AutonlError(f"dataset '{root}' is not a folder (expected ROOT/train/<class>/<image>)")
    try:
        scans = {s: _scan_split(root, s) for s in ("train", "val")}
    except OSError as e:  # e.g. a folder without read permission
        raise AutonlError(f"cannot read '{e.filename or root}': {e.strerror or e}") from None
    (train_classes, _), (val_classes, _) = scans["train"], scans["val"]
    if train_classes != val_classes:
        only_t = sorted(set(train_classes) - set(val_classes)) or ["-"]
        only_v = sorted(set(val_classes) - set(train_classes)) or ["-"]
        raise AutonlError(f"'{root}': train/ and val/ have different classes "
                          f"(only in train: {', '.join(only_t)}; only in val: {', '.join(only_v)})")
    samples = {s: [(p, label) for label, ps in enumerate(files) for p in ps] for s, (_, files) in scans.items()}
    return train_classes, samples


def _subset(n: int, limit: int | None) -> np.ndarray:
    """A fixed (seed-independent, so runs with different seeds see the same data) subset."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:limit])


class _Progress:
    def __init__(self, total: int, what: str):
        self.total, self.what, self.shown = total, what, -1
        self.on = total >= _PROGRESS_MIN_FILES
        self.tty = self.on and sys.stderr.isatty()

    def update(self, done: int) -> None:
        pct = 100 * done // max(self.total, 1)
        # a terminal gets a live line; a log file gets one line per 10% instead of a flood
        if not self.on or pct == self.shown or (not self.tty and pct % 10 and done < self.total):
            return
        self.shown = pct
        end = "\r" if self.tty and done < self.total else "\n"
        print(f"checking {self.what}: {done}/{self.total} images ({pct}%)", end=end, file=sys.stderr, flush=True)


class _CheckFiles(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return _why_unreadable(str(self.paths[i]))


def _cache_file(paths) -> Path | None:
    base = os.environ.get("AUTONL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "autonl")
    h = hashlib.sha1()
    try:
        for p in paths:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return Path(base) / "checked-images" / f"{h.hexdigest()}.json"


def find_unreadable(paths, what: str, workers: int = 0) -> dict[str, str]:
    """Decode every file once; ``{path: reason}`` for those that fail.

    The result for a large set is remembered under ``$AUTONL_CACHE_DIR`` (default
    ``~/.cache/autonl``), keyed by every file's path, size and mtime, so that an unchanged
    dataset is not decoded again on the next run.
    """
    paths = [str(p) for p in paths]
    cache = _cache_file(paths) if len(paths) >= _CACHE_MIN_FILES else None
    if cache is not None and cache.is_file():
        try:  # by position: the same files may be spelled differently (relative, ./) next time
            return {paths[i]: str(r) for i, r in json.loads(cache.read_text())["unreadable"]}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
    progress, reasons = _Progress(len(paths), what), []
    if workers > 0 and len(paths) >= _PARALLEL_MIN_FILES:
        # workers return reasons as strings and never raise, so nothing comes back as a traceback
        for chunk in DataLoader(_CheckFiles(paths), batch_size=32, num_workers=workers, collate_fn=list):
            reasons += chunk
            progress.update(len(reasons))
    else:
        for p in paths:
            reasons.append(_why_unreadable(p))
            progress.update(len(reasons))
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"unreadable": [[i, r] for i, r in enumerate(reasons) if r]}))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home only costs a re-check next time
    return {p: r for p, r in zip(paths, reasons) if r}


class ImageFolderDataset(_AugmentedDataset):
    """Samples ``[(path, label)]`` from :func:`scan_image_folder`, decoded with Pillow to RGB.

    Why check every file here rather than in the workers: a worker's exception reaches the
    main process with the worker's traceback glued into its message, and a bad file found
    hours into training costs the run. Decoding everything once up front (in parallel,
    remembered across runs) gives one clean line before training starts, and fixes the
    sample count (hence the epoch length) before the sampler is built. A file that breaks
    after the check is still caught: ``load`` returns an ``_Unreadable`` marker that
    ``_Loader`` turns into the same one-line error (or skips).
    """

    def __init__(self, samples, classes, transform, what: str = "images", skip_corrupt: bool = False,
                 workers: int = 0, limit: int | None = None):
        samples = [samples[i] for i in _subset(len(samples), limit)]
        bad = find_unreadable([p for p, _ in samples], what, workers)
        if bad and not skip_corrupt:
            first = next(p for p, _ in samples if p in bad)
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise AutonlError(f"corrupt or truncated image '{first}' ({bad[first]}){more}; {_SKIP_HINT}")
        if bad:
            before = {label for _, label in samples}  # a small subset may lack classes anyway
            samples = [s for s in samples if s[0] not in bad]
            warnings.warn(f"skipped {len(bad)} corrupt or truncated image{'s' * (len(bad) > 1)} in {what} "
                          f"(first: {next(iter(bad))})", CorruptImageWarning, stacklevel=3)
            for label in sorted(before - {label for _, label in samples}):
                raise AutonlError(f"class '{classes[label]}' in {what} has no readable images left "
                                  f"after skipping corrupt ones")
        # numpy arrays, not lists of str: workers touching Python objects copy the pages
        # holding their refcounts, which grows memory per worker on large datasets
        self.paths = np.array([p for p, _ in samples])
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.classes, self.transform, self.skipped = list(classes), transform, len(bad)

    def __len__(self):
        return len(self.paths)

    def load(self, i):
        path = str(self.paths[i])
        try:
            return _decode(path), int(self.labels[i])
        except Exception:  # noqa: BLE001 - reported by the main process, see the class docstring
            return _Unreadable(path, _why_unreadable(path) or "could not be read")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    try:
        with np.load(DIGITS_ASSET) as z:
            return z["images"], z["labels"].astype(np.int64), z["split"]
    except (OSError, KeyError, ValueError) as e:
        raise AutonlError(f"cannot read the digits asset '{DIGITS_ASSET}' ({e}); "
                          f"reinstall autonl or run scripts/make_digits_asset.py") from None


class DigitsDataset(_AugmentedDataset):
    """The built-in 8x8 digits (see the module docstring), upscaled to ``resolution``."""

    def __init__(self, split: str, resolution: int, transform, limit: int | None = None):
        images, labels, splits = _digits_arrays()
        idx = np.flatnonzero(splits == _SPLIT_IDS[split])
        idx = idx[_subset(len(idx), limit)]
        # 0..16 ink counts -> 0..255, white digit on black, grey repeated to RGB
        grey = torch.from_numpy(images[idx].astype(np.float32) / 16.0)
        self.images = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        self.labels, self.resolution = labels[idx], resolution
        self.classes, self.transform = [str(d) for d in range(10)], transform

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        # upscale before cropping, so crops are not limited to whole 8x8 pixels
        return _resize(self.images[i], (self.resolution, self.resolution)), int(self.labels[i])


def _pattern_bank(inner: int, k: int = 8, grid: int = 3) -> np.ndarray:
    """``k`` patterns, each a ``grid x grid`` arrangement of saturated colours, scaled to
    ``inner x inner``; any two differ in at least 3 cells. Fixed: train and val share it."""
    palette = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)
    rng, cells = np.random.default_rng(20200614), []
    while len(cells) < k:
        c = rng.integers(len(palette), size=(grid, grid))
        if all((c != o).sum() >= 3 for o in cells):
            cells.append(c)
    pick = np.arange(inner) * grid // inner
    return np.stack([palette[c][pick][:, pick] for c in cells])


class LongRangeDataset(_AugmentedDataset):
    """Synthetic "same or different?" task whose answer needs two distant positions.

    Image ``i`` of a split is a pure function of ``(seed, split, i, resolution)``
    (:meth:`render`). On a noisy grey background (per-pixel N(0.5, 0.12) clipped to
    [0.1, 0.9], so never saturated) sit two *key* patches of ``p = max(8, R // 8)`` pixels
    (8 up to 64 px) with a white 1-pixel frame around a ``(p-2)^2`` pattern drawn from a
    fixed bank of 8 saturated 3x3 colour arrangements; their centres lie at least R/2
    apart. At least 8 px so that each pattern cell is 2 px wide and survives a stride-2
    stem: with 5 px patches (1-px cells) neither network of
    ``benchmarks/longrange_ablation.py`` learnt the task at all. Label 1 if both keys show
    the same pattern, else 0; labels alternate within consecutive pairs of indices (random
    order per pair), so every split is balanced. From 32 px on, two *distractor* patches
    (same bank, black frame) are added, so that the frame, not the mere presence of a
    pattern, marks what to compare.

    Why local networks struggle: a feature that sees one key at a time, globally pooled
    and read by a linear classifier (MobileNet's head), gives phi(A)+phi(A) for "same" and
    phi(A)+phi(B) for "different", and no linear function separates those for all A != B.
    The network has to correlate features at two far-apart positions, which is what a
    non-local block's products between positions do. Augmentation: horizontal flip only
    (it keeps same/different); a crop could cut a key out and change the answer.
    """
    PATTERNS = 8

    def __init__(self, split: str, length: int, resolution: int, seed: int, transform):
        if resolution < 16:
            raise AutonlError(f"the longrange dataset needs a resolution of at least 16 (got {resolution})")
        self.split, self.length, self.resolution, self.seed = split, length, resolution, seed
        self.patch = max(8, resolution // 8)
        self.distractors = 2 if resolution >= 32 else 0
        self.bank = _pattern_bank(self.patch - 2, self.PATTERNS)
        self.classes, self.transform = ["different", "same"], transform

    def __len__(self):
        return self.length

    def label(self, i: int) -> int:
        pair = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i // 2, 0])
        return int(pair.integers(2)) ^ (i % 2)

    def render(self, i: int) -> tuple[torch.Tensor, int]:
        """``(uint8 [3,R,R], label)`` of image ``i``."""
        r, p, label = self.resolution, self.patch, self.label(i)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i, 1])
        img = np.clip(rng.normal(0.5, 0.12, (r, r, 3)), 0.1, 0.9).astype(np.float32)
        a = int(rng.integers(self.PATTERNS))
        b = a if label else int((a + 1 + rng.integers(self.PATTERNS - 1)) % self.PATTERNS)
        while True:  # accepts about half of the draws
            pos = rng.integers(0, r - p + 1, size=(2, 2))
            if np.hypot(*(pos[0] - pos[1])) >= r / 2:
                break
        boxes = [tuple(pos[0]), tuple(pos[1])]
        for _ in range(self.distractors):
            for _try in range(50):  # keep distractors off the keys and each other (1 px gap)
                y, x = (int(v) for v in rng.integers(0, r - p + 1, size=2))
                if all(abs(y - by) > p or abs(x - bx) > p for by, bx in boxes):
                    boxes.append((y, x))
                    break
        kinds = [a, b] + [int(rng.integers(self.PATTERNS)) for _ in boxes[2:]]
        for n, ((y, x), k) in enumerate(zip(boxes, kinds)):
            img[y:y + p, x:x + p] = 1.0 if n < 2 else 0.0
            img[y + 1:y + p - 1, x + 1:x + p - 1] = self.bank[k]
        return torch.from_numpy(np.round(img * 255).astype(np.uint8)).permute(2, 0, 1).contiguous(), label

    def load(self, i):
        return self.render(i)


# ----------------------------------------------------------------------------- loaders
class _SeededSampler(Sampler):
    """Yields ``(index, sample_seed)``: order and per-sample augmentation seeds come from one
    generator in the main process, so results do not depend on how indices reach workers."""

    def __init__(self, n: int, shuffle: bool, seed: int, shard: tuple[int, int] = (0, 1)):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0
        self.rank, self.world = shard

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``: a resumed run replays it exactly."""
        self.epoch = epoch

    def __len__(self):
        return len(range(self.rank, self.n, self.world)) if self.shuffle else self.n

    def __iter__(self):
        if not self.shuffle:
            return ((i, 0) for i in range(self.n))
        # Each epoch is a function of (seed, epoch) alone; iterating again moves to the next.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(self.n, generator=generator).tolist()
        seeds = torch.randint(0, 1 << 62, (self.n,), generator=generator).tolist()
        # Distributed runs: every rank draws the same permutation and takes its own stride.
        return iter(list(zip(order, seeds))[self.rank::self.world])


class _BadBatch(NamedTuple):
    good: object          # the collated readable samples, or None
    unreadable: list      # [_Unreadable]


def _collate(items):
    bad = [x for x in items if isinstance(x, _Unreadable)]
    if not bad:
        return default_collate(items)
    good = [x for x in items if not isinstance(x, _Unreadable)]
    return _BadBatch(default_collate(good) if good else None, [tuple(b) for b in bad])


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; give numpy and random the same
    # seed, for any third-party code a worker runs (our transforms use explicit generators)
    s = torch.initial_seed() % (1 << 32)
    random.seed(s)
    np.random.seed(s)


class _Loader(DataLoader):
    """A DataLoader that turns files found unreadable in a worker into one-line errors."""

    def __init__(self, *args, skip_corrupt: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_corrupt = skip_corrupt

    def __iter__(self):
        it = super().__iter__()
        for batch in it:
            if isinstance(batch, _BadBatch):
                path, reason = batch.unreadable[0]
                if not self.skip_corrupt:
                    # stop the workers now: left mid-epoch with batches in flight, they
                    # would otherwise hold up the interpreter's exit for seconds
                    getattr(it, "_shutdown_workers", lambda: None)()
                    if self._iterator is it:
                        self._iterator = None
                    raise _corrupt_error(path, reason)
                warnings.warn(f"skipped {len(batch.unreadable)} image(s) that became unreadable "
                              f"(first: {path}: {reason})", CorruptImageWarning, stacklevel=2)
                if batch.good is None:
                    continue
                batch = batch.good
            yield batch


def _loader(ds, batch_size: int, shuffle: bool, workers: int, seed: int, skip_corrupt: bool,
            shard: tuple[int, int] = (0, 1)) -> _Loader:
    return _Loader(ds, batch_size=batch_size, sampler=_SeededSampler(len(ds), shuffle, seed, shard),
                   num_workers=workers, collate_fn=_collate, worker_init_fn=_worker_init,
                   generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                   pin_memory=torch.cuda.is_available(), skip_corrupt=skip_corrupt,
                   # a ragged last batch of size 1 breaks batch norm in training
                   drop_last=shuffle and len(ds) >= batch_size)


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


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise AutonlError(f"{name} must be an integer >= {lo} (got {value!r})")


def make_loaders(data: str, resolution: int, batch_size: int, workers: int = 2, seed: int = 0,
                 skip_corrupt: bool = False, train_size: int | None = None, val_size: int | None = None,
                 augment: bool = True, shard: tuple[int, int] = (0, 1)) -> tuple[DataLoader, DataLoader, int]:
    """``(train_loader, val_loader, num_classes)`` for ``data`` (a built-in name or a folder).

    ``train_size``/``val_size`` bound the number of samples (a fixed subset, the same for
    every seed); for ``longrange`` they set its size (default 4000/1000). The train loader
    shuffles and drops a ragged last batch; the val loader keeps order. Same ``seed``, same
    batches, epoch by epoch, whatever ``workers`` is.
    """
    _check_int("resolution", resolution, 8)
    _check_int("batch_size", batch_size, 1)
    _check_int("workers", workers, 0)
    _check_int("seed", seed, 0)
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
    return (_loader(train, batch_size, True, workers, seed, skip_corrupt, shard),
            _loader(val, batch_size, False, workers, seed, skip_corrupt), len(train.classes))


def describe(data: str) -> str:
    """One line about ``data``: what it is, its classes and split sizes (no decoding)."""
    src = _resolve(str(data))
    if src == "digits":
        split = _digits_arrays()[2]
        return (f"digits: UCI hand-written digits 8x8 (via scikit-learn), 10 classes, "
                f"{int((split == 0).sum())} train / {int((split == 1).sum())} val images")
    if src == "longrange":
        return (f"longrange: synthetic same/different pair of distant patches, 2 classes, "
                f"{LONGRANGE_SIZES[0]} train / {LONGRANGE_SIZES[1]} val images by default")
    classes, samples = scan_image_folder(src)
    return (f"{src}: image folder, {len(classes)} classes, "
            f"{len(samples['train'])} train / {len(samples['val'])} val images")
