"""The ``tvm`` backend's options: one dataclass with each option's default, help and bounds,
checked when it is made; the backend compiles from it and the command line builds its flags
(and their bounds) from the same fields (:class:`~autonl.backends.base.BackendOptions`)."""
from __future__ import annotations

from dataclasses import dataclass

from autonl.ir import AutonlError
from autonl.ir.ranges import NON_NEGATIVE_INT, POSITIVE

from ..base import BackendOptions, option

LAYOUTS = ("nhwc", "nchw")


@dataclass(frozen=True)
class TvmOptions(BackendOptions):
    target: str = option("host", "A named target (autonl targets).")
    tune_trials: int = option(0, "MetaSchedule trials, on average per task; tasks get them in proportion to their "
                              "share of the untuned time, each at least one batch (0: untuned, unless the tuning "
                              "database has records).", range=NON_NEGATIVE_INT)
    tune_minutes: float | None = option(None, "A tuning budget in minutes (with or without --tune-trials: tuning "
                                        "stops at whichever ends first).", range=POSITIVE)
    tune_rpc: str | None = option(None, "Tune on a board: HOST:PORT of its TVM RPC server (or of a tracker, with "
                                  "--tune-rpc-key); candidates are built for --target and timed there.",
                                  metavar="HOST:PORT")
    tune_rpc_key: str | None = option(None, "The tracker key of the board's servers (--tune-rpc is then a tracker).")
    resume: bool = option(False, "Finish the tuning run that was interrupted in the tuning database (its plan, "
                          "records and budget are kept as they are measured).")
    tuning_dir: str | None = option(None, "The tuning database (default OUT/tuning).")
    no_prepack: bool = option(False, "No weight-layout prepacking after tuning (the network then stays NCHW).")
    layout: str = option("nhwc", "The activations' layout in tuned builds: nhwc (convolutions vectorize over "
                         "channels) or nchw (the ONNX model's own); a tuning database holds one layout's kernels.",
                         choices=LAYOUTS)

    @property
    def prepack(self) -> bool:
        return not self.no_prepack

    @property
    def tuning_asked(self) -> bool:
        """Whether these options ask for tuning (a budget, or finishing an interrupted run)."""
        return self.tune_trials > 0 or bool(self.tune_minutes) or self.resume

    def check_tuning(self, target) -> None:
        """One line, before any work, for tuning options that do not go together or with the
        ``target`` (a NamedTarget)."""
        if self.tune_rpc_key is not None and self.tune_rpc is None:
            raise AutonlError("--tune-rpc-key names servers of a tracker: give the tracker with --tune-rpc HOST:PORT")
        if self.tune_rpc is not None and not self.tuning_asked:
            raise AutonlError("--tune-rpc is where tuning measures: give a budget (--tune-trials N and/or "
                              "--tune-minutes M)")
        if self.tuning_asked and not target.is_host and self.tune_rpc is None:
            raise AutonlError(f"tuning measures on the target's CPU; target '{target.name}' is not this machine: "
                              f"tune on the board through its RPC server (--tune-rpc HOST:PORT), tune --target host, "
                              f"or compile '{target.name}' untuned")
