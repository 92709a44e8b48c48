"""A user's ImageFolder of our making, for the int8 accuracy checks (issue #38):
``fashion-colour``. Six Fashion-MNIST classes (T-shirt, trouser, dress, sandal, sneaker, bag),
each garment tinted in a random colour and pasted at a random place on a 48x48 RGB background
of coloured noise, written as PNG files in ``train/<class>/`` and ``val/<class>/``; colour,
position and size differ from the built-in grey 28x28 set, as a user's photos would.

    python benchmarks/make_fashion_folder.py --out /tmp/fashion-colour [--train 400 --val 100]

Reads Debian's ``dataset-fashion-mnist`` (or ``$AUTONL_FASHION_MNIST``): ``--train`` images
per class from the training images, ``--val`` per class from the test images; seeded.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import harness
import numpy as np
from PIL import Image

CLASSES = {0: "tshirt", 1: "trouser", 3: "dress", 5: "sandal", 7: "sneaker", 8: "bag"}
SIZE, ITEM = 48, 28


def paste(item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 48x48 RGB image: ``item`` (28x28 grey) tinted, at a random place on coloured noise."""
    canvas = (rng.random(3) * 160)[None, None] + rng.normal(0, 25, (SIZE, SIZE, 3))
    tint = 0.4 + 0.6 * rng.random(3)
    y, x = rng.integers(0, SIZE - ITEM, 2)
    alpha = item[..., None] / 255.0
    patch = canvas[y:y + ITEM, x:x + ITEM]
    canvas[y:y + ITEM, x:x + ITEM] = patch * (1 - alpha) + 255 * alpha * tint
    return np.clip(canvas, 0, 255).astype(np.uint8)


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--out", required=True, type=Path, help="folder to create (replaced if it holds a previous one)")
    ap.add_argument("--train", type=int, default=400, help="training images per class")
    ap.add_argument("--val", type=int, default=100, help="validation images per class")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from autonl.backends.torch.data.builtin_data import fashion_mnist_arrays

    rng = np.random.default_rng(args.seed)
    if args.out.exists():
        if not (args.out / "train").is_dir():
            raise SystemExit(f"error: {args.out} exists and is not a folder this script made; give another --out")
        shutil.rmtree(args.out)
    for split, per_class in (("train", args.train), ("val", args.val)):
        images, labels = fashion_mnist_arrays(split)
        for label, name in CLASSES.items():
            folder = args.out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, j in enumerate(np.flatnonzero(labels == label)[:per_class]):
                Image.fromarray(paste(images[j], rng)).save(folder / f"{i:04d}.png")
    print(f"wrote {args.out}/: {len(CLASSES)} classes, {args.train} + {args.val} images per class")


if __name__ == "__main__":
    main()
