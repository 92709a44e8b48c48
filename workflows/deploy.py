"""A TVM deploy folder (``autonl compile --backend tvm``) on its device: run and timed there
(``autonl deploy``: :func:`deploy_folder`, its :class:`DeployResult`), its kernels timed one by
one (``autonl profile``: :func:`profile_folder`, its :class:`ProfileResult`); the named TVM
targets (``autonl targets``: :func:`tvm_targets`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import AutonlError

__all__ = ["DeployResult", "ProfileResult", "deploy_folder", "profile_folder", "random_weights_note", "tvm_targets"]


@dataclass(frozen=True)
class DeployResult:
    """A deploy folder run on its device: where, the median latency over ``runs`` runs, the
    largest difference from the logits PyTorch gave (None when the folder has none), and
    ``doc``, the result as ``--json`` writes it."""

    where: str
    median_ms: float
    runs: int
    max_abs_diff: float | None
    doc: dict


def deploy_folder(folder: str, rpc_addr: str | None = None, qemu: bool = False, runs: int = 20,
                  input_npy: str | None = None) -> DeployResult:
    """Run ``folder`` through TVM RPC (``rpc_addr``: upload the library, run and time it
    there) or under qemu-user (``qemu``: the cross-built runner); exactly one of them."""
    if bool(rpc_addr) == bool(qemu):
        raise AutonlError("give one of --rpc HOST:PORT or --qemu")
    from autonl.backends.tvm import remote

    res = remote.run_qemu(folder, runs, input_npy) if qemu else remote.run_rpc(rpc_addr, folder, runs, input_npy)
    return DeployResult(res["where"], res["median_ms"], res["runs"], res.get("vs_reference_max_abs_diff"), res)


@dataclass(frozen=True)
class ProfileResult:
    """A deploy folder's kernels timed: its library and target, a whole run and the kernels'
    sum (microseconds), ``kernels`` (kernel, calls, total_us, share; slowest first), and
    ``doc``, the result as ``--json`` writes it."""

    library: str
    target: str
    model_us: float
    kernels_us: float
    kernels: list[dict]
    doc: dict


def profile_folder(folder: str, runs: int = 5) -> ProfileResult:
    """Per-kernel (fused layer) time of ``folder``'s library over ``runs`` runs, on this
    machine (through the VM's instrument hook)."""
    from autonl.backends.tvm import remote

    res = remote.profile(folder, runs=runs)
    return ProfileResult(res["library"], res["target"], res["model_us"], res["kernels_us"], res["kernels"], res)


def random_weights_note(folder) -> str | None:
    """One line when the folder was compiled from random weights (its manifest says so)."""
    try:
        weights = json.loads((Path(folder) / "manifest.json").read_text()).get("weights", "")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(weights, str) and weights.startswith("random"):
        return (f"weights: {weights} (compiled without trained weights): latencies are real, outputs are not "
                f"a trained model's")
    return None


def tvm_targets() -> dict:
    """``{name: target}`` of the named TVM targets (each with ``doc`` and ``target_dict()``)."""
    from autonl.backends.tvm import TARGETS
    return dict(TARGETS.items())
