"""The built-in datasets: ``digits`` (the UCI hand-written digits), ``fashion-mnist`` (Zalando's
Fashion-MNIST, read from Debian's ``dataset-fashion-mnist`` files) and ``longrange`` (synthetic).

See :mod:`autonl.backends.torch.data` for what each holds and how it is augmented.
"""
from __future__ import annotations

import functools
import gzip
import os
import stat
import zlib
from pathlib import Path

import numpy as np
import torch

from autonl.ir import AutonlError

from .loader import AugmentedDataset, fixed_subset
from .transforms import resize

__all__ = ["BUILTIN_CLASSES", "BUILTIN_DATASETS", "DATA_ALIASES", "canonical_data", "FASHION_MNIST_DIR", "FASHION_MNIST_ENV", "LONGRANGE_SIZES",
           "DigitsDataset", "FashionMnistDataset", "LongRangeDataset", "digits_arrays", "fashion_mnist_arrays",
           "fashion_mnist_files", "fashion_mnist_folder", "fashion_mnist_labels"]

BUILTIN_DATASETS = ("digits", "fashion-mnist", "longrange")
BUILTIN_CLASSES = {     # in label order
    "digits": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "longrange": ["different", "same"],
}
# other names of the built-in sets, accepted by every --data: "builtin" (the quick start's
# word) is the digits
DATA_ALIASES = {"builtin": "digits"}
LONGRANGE_SIZES = (4000, 1000)          # default train / val sizes of the synthetic set
DIGITS_ASSET = Path(__file__).resolve().parent / "assets" / "digits.npz"
_SPLIT_IDS = {"train": 0, "val": 1}


def canonical_data(data):
    """``data`` with an alias (:data:`DATA_ALIASES`) replaced by the set's own name."""
    return DATA_ALIASES.get(data, data) if isinstance(data, str) else data


@functools.lru_cache(maxsize=1)
def digits_arrays():
    """``(images uint8 [N,8,8] of 0..16, labels int64 [N], split [N]: 0 train, 1 val)`` of the asset."""
    try:
        with np.load(DIGITS_ASSET) as z:
            return z["images"], z["labels"].astype(np.int64), z["split"]
    except (OSError, KeyError, ValueError) as e:
        raise AutonlError(f"cannot read the digits asset '{DIGITS_ASSET}' ({e}); "
                          f"reinstall autonl or run scripts/make_digits_asset.py") from None


class DigitsDataset(AugmentedDataset):
    """The built-in 8x8 digits (see :mod:`.data`), upscaled to ``resolution``."""

    def __init__(self, split: str, resolution: int, transform, limit: int | None = None):
        images, labels, splits = digits_arrays()
        idx = np.flatnonzero(splits == _SPLIT_IDS[split])
        idx = idx[fixed_subset(len(idx), limit)]
        # 0..16 ink counts -> 0..255, white digit on black, grey repeated to RGB
        grey = torch.from_numpy(images[idx].astype(np.float32) / 16.0)
        self.images = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        self.labels, self.resolution = labels[idx], resolution
        self.classes, self.transform = BUILTIN_CLASSES["digits"], transform

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        # upscale before cropping, so crops are not limited to whole 8x8 pixels
        return resize(self.images[i], (self.resolution, self.resolution)), int(self.labels[i])


# -- fashion-mnist ---------------------------------------------------------------------------
FASHION_MNIST_ENV = "AUTONL_FASHION_MNIST"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")     # where Debian's package puts them
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049       # the IDX magic numbers: unsigned bytes, 3 and 1 dimensions
_FASHION_SIDE = 28
_FASHION_MAX_ITEMS = 1_000_000       # a header promising more is not Fashion-MNIST (60000 + 10000)


def fashion_mnist_folder() -> Path:
    """``$AUTONL_FASHION_MNIST`` if set, else Debian's folder."""
    given = os.environ.get(FASHION_MNIST_ENV)
    return Path(os.path.expanduser(given)) if given else FASHION_MNIST_DIR


def fashion_mnist_files(split: str) -> tuple[Path, Path]:
    """``(images, labels)`` files of ``split`` in :func:`fashion_mnist_folder`: the gzipped
    ones as distributed, else plain (uncompressed) IDX files of the same name without
    ``.gz``. A missing one is one line that says where it was looked for and how to get it
    (checked before any training starts: :func:`~.data.make_loaders` reads the files first)."""
    folder = fashion_mnist_folder()
    found = []
    for stem in _FASHION_FILES[split]:
        path = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)
        if path is None:
            where = f"{folder} (${FASHION_MNIST_ENV})" if os.environ.get(FASHION_MNIST_ENV) else str(folder)
            raise AutonlError(f"fashion-mnist: no {stem}.gz (or {stem}) in {where}; install Debian's package "
                              f"(apt-get install {FASHION_MNIST_PACKAGE}) or set {FASHION_MNIST_ENV} to a folder "
                              f"with the four Fashion-MNIST files")
        found.append(path)
    return found[0], found[1]


@functools.lru_cache(maxsize=8)
def _read_idx(path: str, magic: int, stamp: tuple[int, int]) -> np.ndarray:
    """The array of an IDX file (gzipped or plain), its header checked: uint8 ``[N,28,28]``
    for ``magic`` 2051, int64 ``[N]`` of 0..9 for 2049. Decoded once per process: the cache
    is keyed by the path and its ``stamp`` (size, mtime), so a replaced file is read again."""
    what = "image" if magic == _IDX_IMAGES else "label"
    dims = 3 if magic == _IDX_IMAGES else 1
    head = 4 + 4 * dims

    def bad(problem: str) -> AutonlError:
        return AutonlError(f"{path}: not a Fashion-MNIST {what} file ({problem}); "
                           f"reinstall {FASHION_MNIST_PACKAGE} or replace the file")

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):      # a FIFO would block the read for ever
            raise bad("not a regular file: a FIFO, device or socket")
        # the header first, then no more than it promises (and one byte to tell a longer
        # file): a file never makes this read more than its header says
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read(head)
            if len(raw) < head:
                raise bad(f"{len(raw)} bytes, shorter than the {head}-byte IDX header")
            found = int.from_bytes(raw[:4], "big")
            if found != magic:
                raise bad(f"magic number {found}, expected {magic}")
            shape = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(dims))
            if shape[0] == 0:
                raise bad("it holds no items")
            if dims == 3 and shape[1:] != (_FASHION_SIDE, _FASHION_SIDE):
                raise bad(f"images of {shape[1]}x{shape[2]} pixels, expected {_FASHION_SIDE}x{_FASHION_SIDE}")
            if shape[0] > _FASHION_MAX_ITEMS:
                raise bad(f"{shape[0]} items, more than the {_FASHION_MAX_ITEMS} a split may hold")
            expected = head + int(np.prod(shape))
            raw += f.read(expected - head + 1)
    except (OSError, EOFError, zlib.error) as e:     # not gzip, truncated, corrupt, unreadable
        raise AutonlError(f"{path}: cannot read this Fashion-MNIST {what} file ({e}); "
                          f"reinstall {FASHION_MNIST_PACKAGE} or replace the file") from None
    if len(raw) != expected:
        raise bad(f"{'more than ' if len(raw) > expected else ''}{len(raw) if len(raw) <= expected else expected} "
                  f"bytes where the header promises {expected} for {shape[0]} items")
    array = np.frombuffer(raw, np.uint8, offset=head).reshape(shape)
    if dims == 1:
        if int(array.max()) >= len(BUILTIN_CLASSES["fashion-mnist"]):
            raise bad(f"label {int(array.max())}, expected 0..9")
        return array.astype(np.int64)
    return array


def _read(path: Path, magic: int) -> np.ndarray:
    st = path.stat()
    return _read_idx(str(path), magic, (st.st_size, st.st_mtime_ns))


def fashion_mnist_labels(split: str) -> np.ndarray:
    """The labels (int64 [N] of 0..9) of ``split`` ('train' or 'val': the 10000 test images)."""
    return _read(fashion_mnist_files(split)[1], _IDX_LABELS)


def fashion_mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N,28,28], labels int64 [N])`` of ``split``, checked to agree in N."""
    image_file, label_file = fashion_mnist_files(split)
    images, labels = _read(image_file, _IDX_IMAGES), _read(label_file, _IDX_LABELS)
    if len(images) != len(labels):
        raise AutonlError(f"{label_file}: {len(labels)} labels for the {len(images)} images of {image_file}; "
                          f"reinstall {FASHION_MNIST_PACKAGE} or replace the files")
    return images, labels


class FashionMnistDataset(AugmentedDataset):
    """Fashion-MNIST (see :mod:`.data`): 'train' the 60000 training images, 'val' the 10000
    test images; grey 28x28 resized to ``resolution`` and repeated to RGB.

    The decoded split (47 MB for 'train') is shared with the process-wide cache; a ``limit``
    keeps a fixed subset of indices into it rather than a copy.
    """

    def __init__(self, split: str, resolution: int, transform, limit: int | None = None):
        self.images, labels = fashion_mnist_arrays(split)
        self.index = fixed_subset(len(labels), limit)
        self.labels, self.resolution = labels[self.index], resolution
        self.classes, self.transform = BUILTIN_CLASSES["fashion-mnist"], transform

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        # resize the one grey channel before repeating it (a third of the work), and before
        # cropping, as the digits, so that crops are not limited to whole source pixels
        grey = torch.tensor(self.images[self.index[i]], dtype=torch.float32).div_(255.0).unsqueeze(0)
        grey = resize(grey, (self.resolution, self.resolution))
        return grey.expand(3, -1, -1), int(self.labels[i])


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


class LongRangeDataset(AugmentedDataset):
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
        self.classes, self.transform = BUILTIN_CLASSES["longrange"], transform

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
