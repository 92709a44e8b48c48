"""A small ImageFolder of shapes and textures, written by code, as a user's own data looks.

``write_shapes_folder(root, train_per_class, val_per_class, seed)`` writes
``root/{train,val}/{circle,square,stripes,checker}/NNN.<ext>``: four classes (two shapes on a
textured background, two textures filling the image), images of 40..200 px on each side
(not square), saved as JPEG, PNG, BMP or WebP in every mode a user's folder holds: RGB,
grey ("L"), CMYK, RGBA and palette ("P"). Colours, sizes, positions, stripe angles and
checker periods vary per image; the class is the shape or the texture, never the colour or
the size, so a network has to look at structure. Used by the tests that run the whole
journey on "their own data" and by ``benchmarks/lightnl_numerics.py``; a pure function of
``seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SHAPES_CLASSES", "write_shapes_folder"]

SHAPES_CLASSES = ("checker", "circle", "square", "stripes")
_MODES = ("RGB", "RGB", "RGB", "L", "CMYK", "RGBA", "P")
_FORMATS = {"RGB": ("jpg", "png", "bmp", "webp"), "L": ("png", "jpg"), "CMYK": ("jpg",),
            "RGBA": ("png",), "P": ("png", "bmp")}


def _image(kind: str, rng: np.random.Generator, sizes: tuple[int, int]) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fg, bg = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    while np.abs(fg - bg).sum() < 150:        # the structure must be visible
        fg = rng.uniform(0, 255, size=3).astype(np.float32)
    if kind in ("circle", "square"):
        # a faint texture underneath, so that "uniform background" is no shortcut
        t = 0.5 + 0.5 * np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0.05, 0.3))
        img = bg + (t[..., None] - 0.5) * 40
        size = rng.uniform(0.3, 0.45) * min(h, w)
        cy, cx = rng.uniform(size, h - size), rng.uniform(size, w - size)
        if kind == "circle":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size ** 2
        else:
            mask = (np.abs(yy - cy) <= size * 0.85) & (np.abs(xx - cx) <= size * 0.85)
        img[mask] = fg
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        img = np.where((np.floor(phase) % 2 == 0)[..., None], fg, bg)
    else:  # checker
        period = rng.uniform(6, 20)
        cells = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 0
        img = np.where(cells[..., None], fg, bg)
    img = img + rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_shapes_folder(root: str | Path, train_per_class: int = 60, val_per_class: int = 16, seed: int = 0,
                        sizes: tuple[int, int] = (40, 200)) -> Path:
    """Write the folder (see the module docstring; ``sizes``: the range of each side, in
    pixels) and return ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for kind in SHAPES_CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                im = Image.fromarray(_image(kind, rng, sizes))
                mode = _MODES[int(rng.integers(len(_MODES)))]
                if mode == "P":
                    im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
                elif mode == "RGBA":
                    im = im.convert("RGBA")
                    im.putalpha(255)
                else:
                    im = im.convert(mode)
                ext = _FORMATS[mode][int(rng.integers(len(_FORMATS[mode])))]
                im.save(folder / f"{i:03d}.{ext}")
    return root
