"""The configurations of a training run and of a search run: their fields, defaults and
checks, in one place that imports no torch, so the command line takes its defaults from
here instead of repeating them."""
from __future__ import annotations

from dataclasses import dataclass, fields

from autonl.ir import AutonlError


@dataclass
class TrainConfig:
    data: str = "digits"
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"          # sgd (Nesterov momentum 0.9) or rmsprop (TF-style, as MnasNet)
    weight_decay: float = 4e-5
    warmup_steps: int = 20
    label_smoothing: float = 0.1
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    train_size: int | None = None
    val_size: int | None = None
    skip_corrupt: bool = False
    precise_bn: int = 20               # batches to re-estimate BN statistics before each evaluation

    def __post_init__(self):
        if self.optimizer not in ("sgd", "rmsprop"):
            raise AutonlError(f"unknown optimizer '{self.optimizer}'; known optimizers: rmsprop, sgd")
        for name in ("steps", "batch_size", "eval_every", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AutonlError(f"--{name.replace('_', '-')} must be at least 1")
        if not (self.lr > 0 and 0 <= self.label_smoothing < 1 and self.warmup_steps >= 0):
            raise AutonlError("need lr > 0, 0 <= label smoothing < 1 and warm-up steps >= 0")

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        known = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})


@dataclass
class SearchConfig:
    target_macs: float
    data: str = "digits"
    lam: float = 5.0
    steps: int = 300
    warmup_steps: int = 100
    batch_size: int = 64
    lr: float = 0.05
    arch_lr: float = 0.05
    arch_optimizer: str = "adam"         # adam: every gate moves alike; sgd: in proportion to its pull
    tau: float = 1.0
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    cost_resolution: int | None = None   # count MACs at this input size (default: the search's)
    log_every: int = 5
    checkpoint_every: int = 50
    train_size: int | None = None
    val_size: int | None = None
    skip_corrupt: bool = False

    def __post_init__(self):
        if not self.target_macs > 0:
            raise AutonlError(f"the MAC target must be positive, got {self.target_macs}")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AutonlError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise AutonlError(f"warm-up steps ({self.warmup_steps}) must be below the steps ({self.steps})")
        if self.arch_optimizer not in ("adam", "sgd"):
            raise AutonlError(f"unknown arch optimizer '{self.arch_optimizer}'; known: adam, sgd")
        if self.lam < 0 or self.tau <= 0 or self.lr <= 0 or self.arch_lr <= 0:
            raise AutonlError("need lambda >= 0 and positive tau, lr and arch lr")

    @staticmethod
    def from_dict(d: dict) -> "SearchConfig":
        known = {f.name for f in fields(SearchConfig)}
        return SearchConfig(**{k: v for k, v in d.items() if k in known})
