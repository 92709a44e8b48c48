"""Image transforms of the torch backend's data: random resized crop, resize, flip, normalise.

Every transform takes a uint8 (or [0,1] float) CHW tensor and returns a float32 CHW tensor
normalised with the ImageNet mean/std; the random ones draw only from the
``torch.Generator`` they are given (one per sample, seeded by the sampler), never from a
global generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "TrainTransform", "random_resized_crop_box"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_ASPECT = 4      # EvalTransform: resize at most this many times the crop's side along the long side


def _to_float(img: torch.Tensor) -> torch.Tensor:
    return img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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
    float so that a large photo is never converted whole. :meth:`plan` and :meth:`finish` are
    the two halves of a call, for a decoder that reads only the part (and the size) the
    transform needs (``image_folder``: JPEGs decoded at reduced size).
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip

    def plan(self, h: int, w: int, g: torch.Generator) -> tuple[tuple[int, int, int, int], int]:
        """(the region ``(top, left, height, width)`` of an h x w image this call uses, the
        smallest side that region may be shrunk to before :meth:`finish` without losing detail)."""
        if self.scale is None:
            return (0, 0, h, w), self.size
        return random_resized_crop_box(h, w, g, self.scale, self.ratio), self.size

    def finish(self, region: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        img = resize(_to_float(region), (self.size, self.size))
        if self.flip and float(torch.rand((), generator=g)) < 0.5:
            img = img.flip(-1)
        return _normalize(img)

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        (top, left, h, w), _ = self.plan(img.shape[-2], img.shape[-1], g)
        return self.finish(img[..., top:top + h, left:left + w], g)


class EvalTransform:
    """Shorter side to ``round(size / crop_fraction)``, centre crop; ``crop_fraction=None``
    resizes straight to ``size x size`` (for images that are already framed, like digits)."""

    def __init__(self, size: int, crop_fraction: float | None = 0.875):
        self.size, self.crop_fraction = size, crop_fraction

    def plan(self, h: int, w: int, g: torch.Generator | None = None) -> tuple[tuple[int, int, int, int], int]:
        """The whole image, which may be shrunk to the resized shorter side first."""
        short = self.size if self.crop_fraction is None else int(round(self.size / self.crop_fraction))
        return (0, 0, h, w), short

    def finish(self, region: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self(region, g)

    def __call__(self, img: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        s = self.size
        if self.crop_fraction is None:
            return _normalize(resize(_to_float(img), (s, s)))
        short = int(round(s / self.crop_fraction))
        h, w = img.shape[-2:]
        nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        if max(nh, nw) > MAX_ASPECT * short:
            # a strip (say 1 x 64M pixels) would be resized whole to short x 2.4G pixels, far
            # more than the image itself: keep the middle part that holds the crop (with a wide
            # margin for the resampling filter) before resizing, so the work stays bounded
            if nw > nh:
                keep = min(w, math.ceil(w * MAX_ASPECT * short / nw))
                img = img[..., (w - keep) // 2:(w - keep) // 2 + keep]
                nw = max(short, round(keep * short / h))
            else:
                keep = min(h, math.ceil(h * MAX_ASPECT * short / nh))
                img = img[..., (h - keep) // 2:(h - keep) // 2 + keep, :]
                nh = max(short, round(keep * short / w))
        img = resize(_to_float(img), (nh, nw))
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return _normalize(img[..., top:top + s, left:left + s])
