"""The CPU tensor intrinsics MetaSchedule needs, without the GPU ones.

MetaSchedule imports ``tvm.s_tir.tensor_intrin`` wherever it tunes or builds (``TuneContext``
in the tuning process, ``default_build`` in each build worker). That package registers every
intrinsic TVM has by parsing its TVMScript: CUDA's alone take about 12 s, the whole package
about 28 s of one core here, paid once by the tuning process and again by each build worker,
for intrinsics an LLVM CPU target never uses. :func:`register_cpu_intrinsics` registers the
package with only its CPU modules (x86, Arm, RISC-V and their shared dot products: about
1.5 s); MetaSchedule's later ``import tvm.s_tir.tensor_intrin`` then finds it registered.
Call it before anything imports the package; once the whole package is loaded it does nothing.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

__all__ = ["CPU_MODULES", "register_cpu_intrinsics"]

PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_MODULES = ("dot_product_common", "x86", "arm_cpu", "riscv_cpu")


def register_cpu_intrinsics() -> None:
    if PACKAGE in sys.modules:
        return
    import tvm.s_tir

    pkg = types.ModuleType(PACKAGE, "Intrinsics for tensorization (the CPU ones; autonl.backends.tvm.intrinsics).")
    pkg.__path__ = [os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")]
    pkg.__package__ = PACKAGE
    sys.modules[PACKAGE] = pkg
    tvm.s_tir.tensor_intrin = pkg
    try:
        for name in CPU_MODULES:
            setattr(pkg, name, importlib.import_module(f"{PACKAGE}.{name}"))
    except BaseException:
        sys.modules.pop(PACKAGE, None)
        raise
