"""The ``onnx`` backend's options: one dataclass with each option's default, help and bounds,
checked when it is made; the backend compiles from it and the command line builds its flags
(and their bounds) from the same fields (:class:`~autonl.backends.base.BackendOptions`)."""
from __future__ import annotations

from dataclasses import dataclass

from autonl.ir.ranges import POSITIVE_INT, Range

from ..base import DATA_HELP, BackendOptions, option

OPSETS = Range(17)          # the ONNX backend emits opset 17 or newer
CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class OnnxOptions(BackendOptions):
    int8: bool = option(False, "Also write model.int8.onnx (static int8, calibrated on --calib-data).", timing=False)
    calib_data: str | None = option(None, "Calibration and int8 accuracy data [default: --data, else the data the "
                                    "model was trained on]. " + DATA_HELP, timing=False)
    calib_images: int = option(1024, "Images to calibrate int8 on (at most the training split's).", range=POSITIVE_INT,
                               timing=False)
    calib_method: str = option("minmax", "Calibration method.", choices=CALIB_METHODS, timing=False)
    eval_images: int | None = option(None, "Validation images for the int8 accuracy check (default: all).",
                                     range=POSITIVE_INT, timing=False)
    int8_exclude: tuple[str, ...] = option((), "Keep nodes matching this name pattern in fp32 (e.g. 'lightnl_*'); "
                                           "repeatable.", multiple=True, metavar="GLOB", timing=False)
    no_fold_bn: bool = option(False, "Keep BatchNormalization nodes.")
    opset: int = option(17, "ONNX opset.", range=OPSETS)
    skip_corrupt: bool = option(False, "Skip unreadable calibration images instead of stopping.", timing=False)

    @property
    def fold_bn(self) -> bool:
        return not self.no_fold_bn
