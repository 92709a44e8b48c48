"""Named TVM targets: each resolves to a target dict (TVM 0.27 takes JSON-style dicts).

``host`` asks LLVM for this CPU's name (TVM 0.27's LLVM rejects ``"mcpu": "native"``); the
others are fixed aarch64 CPUs. ``cross_cc`` is the C++ compiler that links a library for a
target that is not this machine.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from autonl.ir.registry import Registry


@dataclass(frozen=True)
class NamedTarget:
    name: str
    doc: str
    triple: str
    mcpu: str | None = None
    mattr: tuple[str, ...] = ()
    cores: int | None = None
    cross_cc: str | None = None          # None: this machine's compiler
    extra: dict = field(default_factory=dict)

    def target_dict(self) -> dict:
        d: dict = {"kind": "llvm", "mtriple": self.triple}
        mcpu = self.mcpu or (host_cpu() if self.name == "host" else None)
        if mcpu:
            d["mcpu"] = mcpu
        if self.mattr:
            d["mattr"] = list(self.mattr)
        cores = self.cores or (os.cpu_count() if self.name == "host" else None)
        if cores:
            d["num-cores"] = cores
        return d | self.extra

    @property
    def is_host(self) -> bool:
        return self.cross_cc is None


def host_cpu() -> str:
    from tvm.target import codegen
    return str(codegen.llvm_get_system_cpu())


def host_triple() -> str:
    from tvm.target import codegen
    return str(codegen.llvm_get_system_triple())


AARCH64_CC = "aarch64-linux-gnu-g++"

TARGETS: Registry[NamedTarget] = Registry("target")
for _t in (
    NamedTarget("host", "this machine (x86-64 with its own CPU's features, all its cores)", "x86_64-linux-gnu"),
    NamedTarget("arm64", "generic aarch64 Linux with NEON (any ARMv8-A board; 4 cores, as MetaSchedule "
                "needs a count to tune)", "aarch64-linux-gnu", mattr=("+neon",), cores=4, cross_cc=AARCH64_CC),
    NamedTarget("rpi4", "Raspberry Pi 4 (4x Cortex-A72, ARMv8.0-A, NEON)", "aarch64-linux-gnu",
                mcpu="cortex-a72", mattr=("+neon",), cores=4, cross_cc=AARCH64_CC),
    NamedTarget("rpi5", "Raspberry Pi 5 (4x Cortex-A76, ARMv8.2-A, NEON, dot product)", "aarch64-linux-gnu",
                mcpu="cortex-a76", mattr=("+neon", "+dotprod"), cores=4, cross_cc=AARCH64_CC),
    NamedTarget("android-a78", "Android phone big core (Cortex-A78, e.g. Snapdragon 888 / Dimensity 1200), "
                "aarch64 Linux ABI", "aarch64-linux-gnu", mcpu="cortex-a78", mattr=("+neon", "+dotprod"),
                cores=4, cross_cc=AARCH64_CC),
):
    TARGETS.register(_t.name, _t)


def get_target(name: str) -> NamedTarget:
    return TARGETS.get(name)


def require_cc(target: NamedTarget) -> str | None:
    """The cross compiler for ``target`` (None for the host), or one line on how to get it."""
    from autonl.ir import AutonlError

    if target.cross_cc is None:
        return None
    if shutil.which(target.cross_cc) is None:
        raise AutonlError(f"target '{target.name}' needs the cross compiler {target.cross_cc}, which is not on "
                          f"PATH; on Debian: apt-get install g++-aarch64-linux-gnu")
    return target.cross_cc
