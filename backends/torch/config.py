"""The configurations of a training run and of a search run: their fields, defaults, ranges
and checks, in one place that imports no torch, so the command line takes its defaults and
its option types from here instead of repeating them.

Every numeric field carries its :class:`~autonl.ir.ranges.Range` (field metadata ``"range"``);
``__post_init__`` checks each one, and the command line builds its click types from the
same ranges (``autonl.cli.options.ranged``), so a value out of range is refused while the
command line is parsed, with the same one line as here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from autonl.ir import AutonlError
# Range and its field helpers live in the IR package (no torch, no click).
from autonl.ir.ranges import (FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range,  # noqa: F401
                              check_ranges)
from autonl.ir.ranges import ranged_field as _f

RESOLUTION = Range(8, 4096)              # input height and width
SEED = Range(0, 2**32 - 1)               # numpy and torch both take it
# Settings that change how a run runs, not what it computes: a resumed run may change them.
RUNTIME_SETTINGS = ("workers", "device", "log_every", "checkpoint_every", "eval_every", "channels_last", "compile")
WORKERS = Range(0, 256)                  # data-loading processes
ARCH_OPTIMIZERS = ("adam", "sgd", "shared-adam")        # the thresholds' optimisers
LANDINGS = ("margin", "measured")                       # how a search that ends off its target lands
CROP = Range(0, 1, lo_open=True, integer=False)          # crop scales and fractions: (0, 1]


def check_target(macs: float | None, latency_ms: float | None, table: str | None, required: bool = True,
                 resume: bool = False) -> None:
    """The rules of a search's target, written once: :class:`SearchConfig` checks its fields
    with them, and the command line (``autonl.cli.options.CostTarget``) the values of
    ``--target-macs``, ``--target-latency`` and ``--latency-table`` before any work. One
    target, a MAC count or a latency in milliseconds, positive and finite; a latency with the
    latency table that predicts it, a table only with a latency (``resume``: a resumed search
    may be given its table again). Neither: an error when ``required`` (a resumed search keeps
    its own target)."""
    if macs is not None and latency_ms is not None:
        raise AutonlError("give --target-macs or --target-latency, not both")
    if required and macs is None and latency_ms is None:
        raise AutonlError("give a target: --target-macs, or --target-latency with --latency-table")
    for flag, value, what in (("--target-macs", macs, "the MAC target must be a positive, finite number"),
                              ("--target-latency", latency_ms, "the latency target must be a positive, finite "
                                                               "number of milliseconds")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or not value > 0):
            raise AutonlError(f"{flag}: {what} (got {value})")
    if latency_ms is not None and not table:
        raise AutonlError("--target-latency needs --latency-table TABLE.json (made by autonl latency-table)")
    if table and latency_ms is None and not resume:
        raise AutonlError("--latency-table goes with --target-latency (a MAC target counts MACs)")


def file_sha256(path: str) -> str | None:
    """sha256 of the regular file at ``path``, read in blocks; None when it cannot be read."""
    import hashlib

    from autonl.ir.json_file import open_regular
    try:
        with open_regular(path, "file") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, AutonlError):
        return None


@dataclass
class TrainConfig:
    data: str = "digits"
    steps: int = _f(300, POSITIVE_INT)
    batch_size: int = _f(64, POSITIVE_INT)
    lr: float = _f(0.1, POSITIVE)
    optimizer: str = "sgd"          # sgd (Nesterov momentum 0.9) or rmsprop (TF-style, as MnasNet)
    weight_decay: float = _f(4e-5, Range(0, 1, integer=False))
    warmup_steps: int = _f(20, NON_NEGATIVE_INT)
    label_smoothing: float = _f(0.1, FRACTION)
    workers: int | None = _f(None, WORKERS)   # None: the machine's CPUs / local processes, at most 8
    seed: int = _f(0, SEED)
    device: str = "auto"
    eval_every: int = _f(100, POSITIVE_INT)
    log_every: int = _f(10, POSITIVE_INT)
    checkpoint_every: int = _f(100, POSITIVE_INT)
    train_size: int | None = _f(None, POSITIVE_INT)
    val_size: int | None = _f(None, POSITIVE_INT)
    skip_corrupt: bool = False
    # augmentation (None: the dataset's default, autonl.backends.torch.data.augmentation)
    crop_scale: float | None = _f(None, CROP)   # a training crop keeps this share of the area or more (1: no crop)
    flip: bool | None = None                     # random horizontal flips in training
    eval_crop: float | None = _f(None, CROP)    # evaluation: the centre crop's share of the shorter side
    precise_bn: int = _f(20, NON_NEGATIVE_INT)   # batches to re-estimate BN statistics before each evaluation
    # the network and its batches in channels-last memory format: 2.0x a training step of the
    # evidence space on one CPU thread (AMD EPYC); a runtime setting, the values are the same up to float order
    channels_last: bool = True

    def __post_init__(self):
        if self.optimizer not in ("sgd", "rmsprop"):
            raise AutonlError(f"unknown optimizer '{self.optimizer}'; known optimizers: rmsprop, sgd")
        check_ranges(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        known = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})


@dataclass
class SearchConfig:
    target_macs: float | None = None        # a MAC target, or:
    target_latency_ms: float | None = None  # a latency target, predicted by latency_table (a JSON file)
    latency_table: str | None = None
    # the table's sha256 when the search began (filled in then): a resumed search refuses a
    # table that changed since, rather than predicting from other figures than it began with
    latency_table_sha256: str | None = None
    data: str = "digits"
    lam: float = _f(5.0, NON_NEGATIVE, "--lambda")
    steps: int = _f(300, POSITIVE_INT)
    warmup_steps: int = _f(100, NON_NEGATIVE_INT)
    # the chance that each gate is off in a warm-up step (Single-Path NAS's gates through
    # dropout; 0.5 samples a sub-network uniformly, as SPOS does); 0: every option on
    warmup_drop: float = _f(0.0, FRACTION)
    # the sandwich rule (BigNAS) after the warm-up: each step also trains the weights on the
    # largest sub-network and on one random one (each gate off with chance 0.5), so that the
    # options the thresholds have switched off keep learning and can be judged again
    sandwich: bool = False
    # after the search: evaluate this many landing candidates (the thresholds' choice and
    # networks a few gate flips from it, within the landing tolerance) in the supernet, each
    # with its own BN statistics, on the validation images, and keep the most accurate; 0 or 1:
    # off (on Fashion-MNIST, 24 candidates chose no better at either cost: docs, benchmarks)
    candidates: int = _f(0, NON_NEGATIVE_INT)
    # when the thresholds end off the target by more than the landing tolerance: "margin" flips
    # the least decided gates; "measured" evaluates the least decided single flips that land
    # in the supernet (loss on held-out training images) and keeps the best (landing.py)
    landing: str = "margin"
    # the share of the steps after the warm-up over which the target falls from the largest
    # sub-network's cost to the target (geometrically); 0: the target from the first step
    target_ramp: float = _f(0.0, Range(0, 1, integer=False))
    batch_size: int = _f(64, POSITIVE_INT)
    lr: float = _f(0.05, POSITIVE)
    optimizer: str = "sgd"               # the weights': sgd (Nesterov) or rmsprop (as TrainConfig)
    arch_lr: float = _f(0.05, POSITIVE)
    # shared-adam: each threshold in proportion to its pull, one step size for all (arch_optim.py);
    # adam: every threshold moves alike; sgd: in proportion to its pull, at the loss's scale
    arch_optimizer: str = "adam"
    tau: float = _f(1.0, POSITIVE)
    weight_decay: float = _f(4e-5, Range(0, 1, integer=False))
    label_smoothing: float = _f(0.0, FRACTION)
    workers: int | None = _f(None, WORKERS)   # None: the machine's CPUs / local processes, at most 8
    seed: int = _f(0, SEED)
    device: str = "auto"
    cost_resolution: int | None = _f(None, RESOLUTION)   # count MACs at this input size (default: the search's)
    log_every: int = _f(5, POSITIVE_INT)
    checkpoint_every: int = _f(50, POSITIVE_INT)
    train_size: int | None = _f(None, POSITIVE_INT)
    val_size: int | None = _f(None, POSITIVE_INT)
    # training images held out as the search's own validation (the supernet's accuracy is
    # measured on them and the validation split is not read); None: the validation split
    holdout: int | None = _f(None, POSITIVE_INT)
    skip_corrupt: bool = False
    crop_scale: float | None = _f(None, CROP)   # augmentation, as TrainConfig's
    flip: bool | None = None
    eval_crop: float | None = _f(None, CROP)
    channels_last: bool = True       # the supernet and its batches in channels-last memory format (1.6x on CPU)
    compile: bool = False            # torch.compile the supernet's forward (measure first: benchmarks/)

    def __post_init__(self):
        check_target(self.target_macs, self.target_latency_ms, self.latency_table)
        if self.latency_table:
            self._check_table_unchanged()
        check_ranges(self)
        if not self.warmup_steps < self.steps:
            raise AutonlError(f"warm-up steps ({self.warmup_steps}) must be below the steps ({self.steps})")
        if self.landing not in LANDINGS:
            raise AutonlError(f"unknown landing '{self.landing}'; known: {', '.join(LANDINGS)}")
        if self.arch_optimizer not in ARCH_OPTIMIZERS:
            raise AutonlError(f"unknown arch optimizer '{self.arch_optimizer}'; known: {', '.join(ARCH_OPTIMIZERS)}")
        if self.optimizer not in ("sgd", "rmsprop"):
            raise AutonlError(f"unknown optimizer '{self.optimizer}'; known optimizers: rmsprop, sgd")

    def _check_table_unchanged(self) -> None:
        """Record the latency table's sha256 (a new search), or refuse a table whose sha256 is
        not the recorded one (a resumed search). A missing table is left to its reader."""
        digest = file_sha256(self.latency_table)
        if self.latency_table_sha256 is None:
            self.latency_table_sha256 = digest
        elif digest is not None and digest != self.latency_table_sha256:
            raise AutonlError(f"{self.latency_table}: changed since this search began (sha256 "
                              f"{self.latency_table_sha256[:12]}... then, {digest[:12]}... now); a resumed search "
                              f"predicts from the table it began with: put that table back, or start a new search "
                              f"(another --out, or --force)")

    @property
    def target(self) -> float:
        """The target in the cost's unit: MACs, or milliseconds with a latency table."""
        return self.target_latency_ms if self.target_latency_ms is not None else self.target_macs

    @property
    def unit(self) -> str:
        return "ms" if self.target_latency_ms is not None else "MACs"

    @staticmethod
    def from_dict(d: dict) -> "SearchConfig":
        known = {f.name for f in fields(SearchConfig)}
        return SearchConfig(**{k: v for k, v in d.items() if k in known})
