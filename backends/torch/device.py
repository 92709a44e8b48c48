"""Where and in what precision a run computes: the device choice and mixed precision."""
from __future__ import annotations

import torch

from autonl.ir import AutonlError

__all__ = ["autocast", "memory_format", "pick_device"]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AutonlError(f"device '{name}' asked for, but this machine has no CUDA GPU")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AutonlError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def autocast(device: torch.device):
    """bf16 mixed precision on GPU (no loss scaling needed); full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory format of a network and its image batches (the configs' ``channels_last``)."""
    return torch.channels_last if channels_last else torch.contiguous_format
