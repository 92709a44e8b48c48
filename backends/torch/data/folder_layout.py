"""Where an image folder keeps its training and validation images (no image is decoded here).

Three layouts are read, the ones image datasets ship in:

- ``ROOT/train/<class>/<image>`` and a validation folder beside it, ``ROOT/val/`` (or
  ``validation/``, ``valid/``, ``test/``, the first of these that exists): used as they are;
- ``ROOT/train/<class>/<image>`` alone: the validation images are held out of ``train/``;
- ``ROOT/<class>/<image>`` (a flat root, no ``train/``): the validation images are held out
  of the class folders.

**Held out, how.** From every class, :data:`HOLDOUT_SHARE` of its images (rounded, at least
1 where the class has 2 or more, never all of them) go to validation: those whose path
within the class folder has the smallest SHA-1. The split is stratified (every class keeps
its share), the same on every run and machine (no random state, no listing order), and an
image added to a class moves at most one other image between the splits. The images held
out are never training images: a search (which holds out part of the training images for
itself) and a final training read only the rest.

A root with a validation folder but no ``train/`` serves evaluation alone (``autonl eval``,
the deploy checks); where training images are needed it is refused (a flat root whose
classes include one named ``val`` or ``test`` would be ambiguous, and a split layout with a
missing ``train/`` is the likelier mistake).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import AutonlError

__all__ = ["HOLDOUT_SHARE", "VAL_FOLDERS", "FolderLayout", "folder_layout", "hold_out"]

VAL_FOLDERS = ("val", "validation", "valid", "test")
HOLDOUT_SHARE = 0.2
EXPECTED = "ROOT/<class>/<image>, or ROOT/train/<class>/<image> with ROOT/val/<class>/<image>"


@dataclass(frozen=True)
class FolderLayout:
    """``train``: the folder whose subfolders are the classes of the training images (the
    root itself for a flat root; None for a root read for evaluation alone that has none);
    ``val``: the validation folder, None where the validation images are held out of
    ``train`` (:func:`hold_out`)."""
    root: Path
    train: Path | None
    val: Path | None

    @property
    def held_out(self) -> bool:
        return self.val is None

    def where(self, split: str) -> str:
        """The images of ``split`` ('train' or 'val'), in words, for messages and progress."""
        if not self.held_out:
            return str(self.train if split == "train" else self.val)
        held = f"{HOLDOUT_SHARE * 100:.0f}%"
        return (f"{self.train} (each class but the {held} held out)" if split == "train"
                else f"{self.train} (the {held} of each class held out for validation)")

    def split_text(self) -> str:
        """How the validation images were chosen, one line (``data.json``, ``describe``)."""
        if not self.held_out:
            return f"validation images: {self.val.name}/"
        inside = " of train/" if self.train != self.root else ""
        return (f"validation images: {HOLDOUT_SHARE * 100:.0f}% of each class folder{inside} held out (no "
                f"{'/, '.join(VAL_FOLDERS)}/ folder), those whose path in the class folder has the smallest SHA-1")


def folder_layout(root, splits: tuple[str, ...] = ("train", "val")) -> FolderLayout:
    """The layout of the image folder ``root`` (module docstring) for reading ``splits`` (the
    validation split alone: a root with only a validation folder will do); one line where it
    has none."""
    root = Path(os.path.expanduser(str(root)))
    if not root.exists():
        raise AutonlError(f"dataset folder '{root}' does not exist")
    if not root.is_dir():
        raise AutonlError(f"dataset '{root}' is not a folder (expected {EXPECTED})")
    val = next((root / v for v in VAL_FOLDERS if (root / v).is_dir()), None)
    if (root / "train").is_dir():
        return FolderLayout(root, root / "train", val)
    if val is not None:
        if "train" not in splits:
            return FolderLayout(root, None, val)
        raise AutonlError(f"dataset folder '{root}' has no train/ subfolder (expected {root}/train/<class>/<image>)")
    return FolderLayout(root, root, None)


def _key(path: str, folder: str) -> str:
    rel = os.path.relpath(path, folder).replace(os.sep, "/")
    return hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()


def hold_out(folder: str | Path, files: list[str], share: float = HOLDOUT_SHARE) -> tuple[list[str], list[str]]:
    """``(train, val)``: the images ``files`` of one class folder ``folder``, ``share`` of
    them (rounded; at least 1 of 2 or more, never all) held out for validation (module
    docstring). ``train`` keeps the order of ``files``."""
    n = len(files)
    k = 0 if n < 2 else min(n - 1, max(1, round(share * n)))
    val = set(sorted(files, key=lambda p: _key(p, str(folder)))[:k])
    return [p for p in files if p not in val], [p for p in files if p in val]
