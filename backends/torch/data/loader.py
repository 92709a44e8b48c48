"""From datasets to batches: the datasets' base class, the seeded sampler and the DataLoader.

Determinism: :class:`_SeededSampler` yields ``(index, sample_seed)`` pairs drawn in the main
process from ``(seed, epoch)`` alone, and every dataset (a :class:`AugmentedDataset`) seeds
its augmentation with ``sample_seed``, so a batch depends on (seed, epoch, position) only,
not on the number of workers or their timing.

Unreadable files: a dataset returns an :class:`Unreadable` marker (never raises) for a file
that fails to decode in a worker; :class:`_Loader` turns it into a one-line error, or skips
it with a :class:`CorruptImageWarning` when ``skip_corrupt`` is set.
"""
from __future__ import annotations

import random
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from autonl.ir import AutonlError

SKIP_HINT = "pass --skip-corrupt to go on"


class CorruptImageWarning(UserWarning):
    """Corrupt images were left out because ``skip_corrupt`` was set."""


class Unreadable(NamedTuple):
    """Returned (not raised) by a worker for a file that fails to decode; see ``_Loader``."""
    path: str
    reason: str


TOO_LARGE = "too large: "   # how the reason for an image over the pixel limit starts
NOT_REGULAR = "not a regular file"   # ... and for a FIFO, device or socket with an image's name


def image_kind(reasons) -> str:
    """What unreadable files with these reasons are: corrupt or truncated, oversized, or both."""
    large = [r.startswith(TOO_LARGE) for r in reasons]
    return "oversized" if all(large) else "corrupt, truncated or oversized" if any(large) else "corrupt or truncated"


def unreadable_error(path: str, reason: str, more: int = 0) -> AutonlError:
    """The one line for an image that cannot be used (and ``more`` others)."""
    head = f"image '{path}' is {reason}" if reason.startswith((TOO_LARGE, NOT_REGULAR)) else \
        f"corrupt or truncated image '{path}' ({reason})"
    return AutonlError(f"{head}{f' and {more} more' if more else ''}; {SKIP_HINT}")


def sample_key(key) -> tuple[int, int]:
    """Loaders index with ``(index, sample_seed)``; a bare index gets a fixed seed of its own."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), (int(key) * 0x9E3779B97F4A7C15 + 1) % (1 << 63)


class AugmentedDataset(Dataset):
    """A dataset indexed with ``(index, sample_seed)``: ``load(i)`` gives ``(image, label)`` (or
    an :class:`Unreadable`), and ``transform`` gets a generator seeded with ``sample_seed``."""
    classes: list[str]
    transform = None

    def load(self, i: int):  # -> (image tensor, label)
        raise NotImplementedError

    def __getitem__(self, key):
        i, sample_seed = sample_key(key)
        loaded = self.load(i)
        if isinstance(loaded, Unreadable):
            return loaded
        img, label = loaded
        return self.transform(img, torch.Generator().manual_seed(sample_seed)), label


def fixed_subset(n: int, limit: int | None) -> np.ndarray:
    """A fixed (seed-independent, so runs with different seeds see the same data) subset."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:limit])


class Subset(AugmentedDataset):
    """The samples ``indices`` of ``base``, with a transform of their own (a held-out part of
    a training set is evaluated without augmentation)."""

    def __init__(self, base: AugmentedDataset, indices: np.ndarray, transform):
        self.base, self.indices, self.transform = base, np.asarray(indices), transform
        self.classes = base.classes

    def __len__(self):
        return len(self.indices)

    def load(self, i: int):
        return self.base.load(int(self.indices[i]))


def split_holdout(train: AugmentedDataset, n: int, transform) -> tuple[Subset, Subset]:
    """``(the rest, n held-out samples)`` of ``train``: a fixed choice, the same for every
    seed; the held-out ones get ``transform`` (the evaluation's)."""
    total = len(train)
    if n >= total:
        raise AutonlError(f"holding out {n} training images leaves none to train on (the training set has {total})")
    held = np.zeros(total, bool)
    held[np.random.default_rng(1).permutation(total)[:n]] = True
    return Subset(train, np.flatnonzero(~held), train.transform), Subset(train, np.flatnonzero(held), transform)


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
    unreadable: list      # [Unreadable]


def _collate(items):
    bad = [x for x in items if isinstance(x, Unreadable)]
    if not bad:
        return default_collate(items)
    good = [x for x in items if not isinstance(x, Unreadable)]
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
                    raise unreadable_error(path, reason)
                warnings.warn(f"skipped {len(batch.unreadable)} image(s) that became unreadable "
                              f"(first: {path}: {reason})", CorruptImageWarning, stacklevel=2)
                if batch.good is None:
                    continue
                batch = batch.good
            yield batch


def seeded_loader(ds, batch_size: int, shuffle: bool, workers: int, seed: int, skip_corrupt: bool,
            shard: tuple[int, int] = (0, 1)) -> _Loader:
    return _Loader(ds, batch_size=batch_size, sampler=_SeededSampler(len(ds), shuffle, seed, shard),
                   num_workers=workers, collate_fn=_collate, worker_init_fn=_worker_init,
                   generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                   pin_memory=torch.cuda.is_available(), skip_corrupt=skip_corrupt,
                   # a ragged last batch of size 1 breaks batch norm in training
                   drop_last=shuffle and len(ds) >= batch_size)
