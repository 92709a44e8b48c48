"""A long-range task from real images, written as an ImageFolder: ``fashion-pointer``.

Each 32x32 image holds two Fashion-MNIST garments (scaled to 12x12) in opposite corners
(top-left and bottom-right, or top-right and bottom-left, a few pixels of jitter) and a
small marker bar half-way down the left or the right edge. The label is the class of the
garment on the marker's side: the marker and the garment it points at are 10-20 pixels
apart, and the other garment is as far again, so no small neighbourhood decides it. A
network that recognises garments but not the marker's side gets about half right (it can
only guess which of the two to name); one that relates the two distant positions gets
more. A horizontal flip moves the marker and both garments together, so flips keep the
label; a crop could cut the marker off (search and train it with ``--crop-scale 1``).

    python benchmarks/make_fashion_pointer.py --out /tmp/fashion-pointer [--train 12000 --val 10000]

The validation split is 10,000 canvases (made from Fashion-MNIST's 10,000 test garments), so
that the evaluation's own sampling noise on a difference of two networks is about 0.004 rather
than 0.009 with 2,000. It did not make this task rank networks: with 400 training steps, two
training seeds of the same 24 networks still do not agree on their order (search_evidence's
``seed reliability``: r 0.00 with 2,000 validation canvases, +0.04 with 10,000).

``--task odd-one-out`` writes another long-range task: three garments in three of the four
corners, two of one class and one of another; the label is the odd garment's class, which only
a comparison of garments 10-20 pixels apart tells (a network that recognises the two classes
present but cannot compare gets about half right). A flip keeps its label; a crop could cut a
garment off (search and train it with ``--crop-scale 1`` too).

Reads Debian's ``dataset-fashion-mnist`` (or ``$AUTONL_FASHION_MNIST``): the training
images make ``train/``, the test images ``val/``; 10 classes named as Fashion-MNIST's.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import harness
import numpy as np
from PIL import Image

CANVAS, ITEM = 32, 12


def _shrink(garments: np.ndarray) -> np.ndarray:
    """The garments scaled to ``ITEM`` x ``ITEM`` (bilinear)."""
    return np.stack([np.asarray(Image.fromarray(g).resize((ITEM, ITEM), Image.BILINEAR)) for g in garments])


def compose(garments: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> tuple[list, list]:
    """``n`` canvases (uint8 [32,32]) and their labels from pairs of random garments."""
    small = _shrink(garments)
    images, out_labels = [], []
    for _ in range(n):
        a, b = rng.integers(len(small), size=2)
        while labels[b] == labels[a]:               # two different classes: the marker decides
            b = rng.integers(len(small))
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        main_diag = bool(rng.integers(2))           # a top-left and bottom-right, or top-right and bottom-left
        jitter = rng.integers(0, 4, size=4)
        top_left = (1 + jitter[0], 1 + jitter[1])
        bottom_right = (CANVAS - ITEM - 1 - jitter[2], CANVAS - ITEM - 1 - jitter[3])
        if main_diag:
            left, right = top_left, bottom_right                      # (row, col) of each garment
        else:
            left, right = (bottom_right[0], top_left[1]), (top_left[0], bottom_right[1])
        for (r, c), g in ((left, a), (right, b)):
            canvas[r:r + ITEM, c:c + ITEM] = np.maximum(canvas[r:r + ITEM, c:c + ITEM], small[g])
        side = int(rng.integers(2))                 # 0: the marker on the left edge, 1: the right
        mr = CANVAS // 2 - 1 + int(rng.integers(-1, 2))
        mc = 2 if side == 0 else CANVAS - 6
        canvas[mr:mr + 2, mc:mc + 4] = 255
        images.append(canvas)
        out_labels.append(int(labels[a if side == 0 else b]))
    return images, out_labels


def compose_odd_one_out(garments: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> tuple[list, list]:
    """``n`` canvases with three garments in three of the four corners: two of one class (two
    different images), one of another; the label is the odd garment's class. Which class is
    the odd one is only known by comparing garments 10-20 pixels apart."""
    small = _shrink(garments)
    by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    images, out_labels = [], []
    for _ in range(n):
        pair, odd = rng.choice(len(by_class), size=2, replace=False)
        items = [*rng.choice(by_class[pair], size=2, replace=False), rng.choice(by_class[odd])]
        corners = rng.permutation(4)[:3]
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        for corner, g in zip(corners, items):
            jr, jc = rng.integers(0, 4, size=2)
            r = 1 + jr if corner < 2 else CANVAS - ITEM - 1 - jr
            c = 1 + jc if corner % 2 == 0 else CANVAS - ITEM - 1 - jc
            canvas[r:r + ITEM, c:c + ITEM] = np.maximum(canvas[r:r + ITEM, c:c + ITEM], small[g])
        images.append(canvas)
        out_labels.append(int(odd))
    return images, out_labels


TASKS = {"pointer": compose, "odd-one-out": compose_odd_one_out}


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=sorted(TASKS), default="pointer",
                    help="pointer: the class of the garment on the marker's side; odd-one-out: the class of "
                         "the one garment of three whose class the other two do not share")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autonl.backends.torch.data.builtin_data import BUILTIN_CLASSES, fashion_mnist_arrays
    from autonl.ir import AutonlError

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} exists and is not empty")
    try:
        splits = {"train": fashion_mnist_arrays("train"), "val": fashion_mnist_arrays("val")}
    except AutonlError as e:
        sys.exit(f"error: {e}")
    classes = [c.replace("/", "-") for c in BUILTIN_CLASSES["fashion-mnist"]]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    for split, n in (("train", args.train), ("val", args.val)):
        images, labels = TASKS[args.task](*splits[split], n, rng)
        for c in classes:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(tmp / split / classes[y] / f"{i:06d}.png")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    print(f"wrote {out}: {args.train} train / {args.val} val images, {len(classes)} classes")


if __name__ == "__main__":
    main()
