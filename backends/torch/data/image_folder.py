"""ImageFolder trees: the layout scan, the up-front check that every file decodes, the dataset.

``ROOT/{train,val}/<class>/*.{jpg,jpeg,png,bmp,webp}``, or ``ROOT/<class>/*`` with the
validation images held out (:mod:`.folder_layout`); classes are sorted by folder name and
train and val must have the same classes. :func:`find_unreadable` decodes every file
once before training (in parallel, with progress, remembered in a cache across runs).

Every decode is bounded: an image of more than ``$AUTONL_MAX_IMAGE_PIXELS`` pixels (default
64,000,000) is refused from its header, before its pixels are decoded, and treated as an
unreadable file (one line naming it; ``--skip-corrupt`` leaves it out). Pillow's own
decompression-bomb check is set to the same limit and made an error, not a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from autonl.ir import AutonlError

from .folder_layout import FolderLayout, folder_layout, hold_out
from .loader import NOT_REGULAR, TOO_LARGE, AugmentedDataset, CorruptImageWarning, Unreadable, sample_key, fixed_subset, \
    image_kind, unreadable_error

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS_ENV", "ImageFolderDataset", "NotRegularFile", "find_unreadable",
           "max_image_pixels", "open_image_file", "scan_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_PROGRESS_MIN_FILES = 2000              # below this, checking is quick enough to stay silent
_PARALLEL_MIN_FILES = 256               # below this, starting workers costs more than it saves
_CACHE_MIN_FILES = 1000                 # below this, re-checking is cheaper than remembering


MAX_PIXELS_ENV = "AUTONL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000


def max_image_pixels() -> int:
    """The most pixels (width x height) an image may have: ``$AUTONL_MAX_IMAGE_PIXELS``, else
    64,000,000; a value that is not a positive integer is a one-line error."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise AutonlError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels, "
                          f"e.g. {DEFAULT_MAX_PIXELS} (the default)")
    return value


class ImageTooLarge(ValueError):
    """An image over the pixel limit, refused before its pixels were decoded."""


class NotRegularFile(ValueError):
    """A path with an image's name that is a FIFO, a device or a socket: never read (a FIFO
    would block the read for ever)."""


def open_image_file(path: str):
    """``path`` opened for reading (binary) if it is a regular file; :class:`NotRegularFile`
    otherwise. Opened non-blocking first, so that a FIFO is found out, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{NOT_REGULAR} (a FIFO, device or socket), so it is not read as an image")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_large(pixels: int | None, limit: int, size: tuple[int, int] | None = None) -> ImageTooLarge:
    what = f"{size[0]}x{size[1]} = " if size else ""
    what += f"{pixels:,} pixels, over" if pixels is not None else "over"
    return ImageTooLarge(f"{TOO_LARGE}{what} the limit of {limit:,} pixels (set {MAX_PIXELS_ENV} to change it)")


def _decode(path: str, reduce=None) -> torch.Tensor:
    """``path`` as a uint8 RGB CHW tensor. ``reduce(width, height)`` (given the size from the
    header) may ask for a smaller decode, ``(width', height')``: a JPEG is then decoded with
    libjpeg's DCT scaling (Pillow's draft mode) at 1/2, 1/4 or 1/8 of its size, the smallest
    that is at least that large; other formats are decoded whole. Scaled decoding still reads
    every coefficient of the file, so a corrupt or truncated file fails the same way."""
    limit = max_image_pixels()
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # Pillow warns about e.g. palette transparency on every decode, epoch after epoch
        warnings.simplefilter("ignore", UserWarning)
        # its decompression-bomb check, at our limit, is an error: nothing over it is decoded
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = limit
        try:
            with open_image_file(path) as f, Image.open(f) as im:
                w, h = im.size                      # from the header: nothing decoded yet
                if w * h > limit:
                    raise _too_large(w * h, limit, (w, h))
                want = reduce(w, h) if reduce is not None else None
                if want is not None and im.format == "JPEG":
                    im.draft("RGB", want)
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise _size_of_a_bomb(path, str(e), limit) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _size_of_a_bomb(path: str, pillow_says: str, limit: int) -> ImageTooLarge:
    """The error for an image Pillow refused at open: its size read again from the header alone
    (open decodes no pixels), else the pixel count Pillow gave."""
    try:
        Image.MAX_IMAGE_PIXELS = None
        with open_image_file(path) as f, Image.open(f) as im:
            w, h = im.size
        return _too_large(w * h, limit, (w, h))
    except Exception:  # noqa: BLE001 - only the message is at stake
        found = re.search(r"\((\d+) pixels\)", pillow_says)
        return _too_large(int(found.group(1)) if found else None, limit)


def _eighth(w: int, h: int) -> tuple[int, int]:
    return max(1, w // 8), max(1, h // 8)


def _why_unreadable(path: str) -> str:
    """'' when ``path`` decodes fully, else a one-line reason without the path in it (a JPEG
    is decoded at 1/8 scale: every coefficient is still read, at a fraction of the work)."""
    try:
        _decode(path, _eighth)
        return ""
    except Image.UnidentifiedImageError:
        return "not a recognisable image"
    except (ImageTooLarge, NotRegularFile) as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - any failure to decode makes the file unusable
        if isinstance(e, OSError) and e.errno is not None:  # the file system failed, not the decoder
            return e.strerror or str(e)
        return " ".join(str(e).replace(path, "<file>").split()) or type(e).__name__


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_classes(d: Path, where: str) -> tuple[list[str], list[list[str]]]:
    """The class folders of ``d`` (sorted) and their images (sorted, nested folders walked)."""
    classes = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise AutonlError(f"'{d}' has no class folders (expected {d}/<class>/<image>{where})")
    for c in classes:     # a class name goes into data.json, manifests and reports: text, not bytes
        try:
            c.encode("utf-8")
        except UnicodeEncodeError:
            shown = c.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise AutonlError(f"class folder '{shown}' in '{d}': its name is not valid UTF-8, and a class name is "
                              f"written into the model's data.json and reports; rename the folder") from None
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


def _scan_layout(layout: FolderLayout, splits: tuple[str, ...]) -> dict[str, tuple[list[str], list[list[str]]]]:
    if layout.held_out:     # one scan of the training folder, split class by class
        where = "" if layout.train != layout.root else f", or {layout.root}/train/<class>/<image>"
        classes, files = _scan_classes(layout.train, where)
        parts = [hold_out(layout.train / c, f) for c, f in zip(classes, files)]
        both = {"train": (classes, [t for t, _ in parts]), "val": (classes, [v for _, v in parts])}
        return {s: both[s] for s in splits}
    return {s: _scan_classes(layout.train if s == "train" else layout.val, "") for s in splits}


def scan_image_folder(root, splits: tuple[str, ...] = ("train", "val")) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Check the layout of an image folder (no decoding; :mod:`.folder_layout` says which
    layouts are read and how validation images are held out where it has no validation
    folder): ``(classes, {split: [(path, label)]})`` (``splits=("val",)``: the validation
    split alone, for evaluation)."""
    layout = folder_layout(root, splits)
    root = layout.root
    try:
        scans = _scan_layout(layout, splits)
    except OSError as e:  # e.g. a folder without read permission
        raise AutonlError(f"cannot read '{e.filename or root}': {e.strerror or e}") from None
    train_classes, _ = scans[splits[0]]
    val_classes = scans["val"][0] if "val" in scans else train_classes
    if train_classes != val_classes:
        only_t = sorted(set(train_classes) - set(val_classes)) or ["-"]
        only_v = sorted(set(val_classes) - set(train_classes)) or ["-"]
        raise AutonlError(f"'{root}': train/ and {layout.val.name}/ have different classes "
                          f"(only in train: {', '.join(only_t)}; only in {layout.val.name}: {', '.join(only_v)})")
    if len(train_classes) < 2:
        under = (f"under {layout.train}/" if layout.held_out else
                 f"under {splits[0]}/" + (f" and {layout.val.name}/" if "val" in scans and splits[0] != "val" else ""))
        raise AutonlError(f"dataset '{root}' has 1 class ({train_classes[0]}): a classifier needs at least 2; add a "
                          f"folder per class {under}")
    samples = {s: [(p, label) for label, ps in enumerate(files) for p in ps] for s, (_, files) in scans.items()}
    return train_classes, samples


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
    h = hashlib.sha1(f"max pixels {max_image_pixels()}\n".encode())  # another limit, another verdict
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
        except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
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


class ImageFolderDataset(AugmentedDataset):
    """Samples ``[(path, label)]`` from :func:`scan_image_folder`, decoded with Pillow to RGB.

    Why check every file here rather than in the workers: a worker's exception reaches the
    main process with the worker's traceback glued into its message, and a bad file found
    hours into training costs the run. Decoding everything once up front (in parallel,
    remembered across runs) gives one clean line before training starts, and fixes the
    sample count (hence the epoch length) before the sampler is built. A file that breaks
    after the check is still caught: ``load`` returns an ``Unreadable`` marker that
    ``_Loader`` turns into the same one-line error (or skips).
    """

    def __init__(self, samples, classes, transform, what: str = "images", skip_corrupt: bool = False,
                 workers: int = 0, limit: int | None = None, reduced_decode: bool = True):
        self.reduced_decode = reduced_decode
        max_image_pixels()  # a bad $AUTONL_MAX_IMAGE_PIXELS: one line here, not a reason per file
        samples = [samples[i] for i in fixed_subset(len(samples), limit)]
        bad = find_unreadable([p for p, _ in samples], what, workers)
        if bad and not skip_corrupt:
            first = next(p for p, _ in samples if p in bad)
            raise unreadable_error(first, bad[first], len(bad) - 1)
        if bad:
            before = {label for _, label in samples}  # a small subset may lack classes anyway
            samples = [s for s in samples if s[0] not in bad]
            warnings.warn(f"skipped {len(bad)} {image_kind(bad.values())} image{'s' * (len(bad) > 1)} in {what} "
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
            return Unreadable(path, _why_unreadable(path) or "could not be read")

    def __getitem__(self, key):
        """The transformed sample; a JPEG is decoded at the smallest scale (1, 1/2, 1/4, 1/8)
        at which the region the transform uses (a random crop, or the whole image for
        evaluation) still has at least the side the transform resizes it to, so no detail
        the network sees is lost (``reduced_decode=False``: always at full size). At scale
        1/r the crop's corners and sides are rounded down to multiples of r pixels (so that
        it is a whole region of the smaller image): a random crop at most r-1 pixels off."""
        if not self.reduced_decode or not hasattr(self.transform, "plan"):
            return super().__getitem__(key)
        i, sample_seed = sample_key(key)
        path, g, plan = str(self.paths[i]), torch.Generator().manual_seed(sample_seed), []

        def reduce(w: int, h: int):
            box, need = self.transform.plan(h, w, g)
            r = next((r for r in (8, 4, 2) if box[2] // r >= need and box[3] // r >= need), 1)
            plan.append((tuple(v // r * r for v in box), r, w))
            return None if r == 1 else (math.ceil(w / r), math.ceil(h / r))

        try:
            img = _decode(path, reduce)
        except Exception:  # noqa: BLE001 - reported by the main process, see the class docstring
            return Unreadable(path, _why_unreadable(path) or "could not be read")
        (top, left, h, w), r, full_w = plan[0]
        if img.shape[-1] == full_w:          # decoded whole (not a JPEG): the rounded crop at full size
            region = img[..., top:top + h, left:left + w]
        else:
            region = img[..., top // r:(top + h) // r, left // r:(left + w) // r]
        return self.transform.finish(region, g), int(self.labels[i])
