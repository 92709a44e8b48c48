"""Regenerate backends/torch/data/assets/digits.npz, the built-in ``digits`` dataset.

Source: the UCI ML hand-written digits data set ("Optical Recognition of Handwritten
Digits", E. Alpaydin and C. Kaynak, 1998; UCI Machine Learning Repository, CC BY 4.0),
as redistributed by scikit-learn (``sklearn.datasets.load_digits``, BSD-3-Clause):
1797 grey 8x8 images of the digits 0..9, pixel values 0..16 (count of ink pixels in a 4x4
block of the original 32x32 bitmap).

scikit-learn is needed only to run this script, never by autonl at run time:

    pip install scikit-learn && python scripts/make_digits_asset.py

The archive holds ``images`` (uint8 [1797, 8, 8], the original 0..16 values, unscaled so
that the file stays small and exact), ``labels`` (uint8 [1797]) and ``split`` (uint8 [1797],
0 = train, 1 = val). The split is fixed here, once, rather than at load time, so that it
never changes with the installed numpy: 20% of each class (rounded) goes to val, chosen
by ``numpy.random.default_rng(0)``.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "backends" / "torch" / "data" / "assets" / "digits.npz"
VAL_FRACTION = 0.2
SEED = 0


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(val_fraction * len(idx)))
        split[rng.permutation(idx)[:n_val]] = 1
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("error: this script needs scikit-learn: pip install scikit-learn")
    d = load_digits()
    images = d.images.astype(np.float64)
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() > 16:
        raise SystemExit(f"error: unexpected digits data: shape {images.shape}")
    if not np.array_equal(images, np.round(images)):
        raise SystemExit("error: digits pixel values are not integers")
    labels = d.target.astype(np.uint8)
    split = stratified_split(labels, VAL_FRACTION, SEED)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images.astype(np.uint8), labels=labels, split=split)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(buf.getvalue())
    print(f"wrote {args.output}: {len(labels)} images, {int((split == 0).sum())} train / "
          f"{int(split.sum())} val, {len(buf.getvalue())} bytes")


if __name__ == "__main__":
    main()
