"""Device names from the command line -> ``torch.device``, and what each device supports."""

from __future__ import annotations

import torch

from cnnsweep.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA if any, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; refuses absent ones."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise ConfigError(f"unknown device {name!r}: the CPU has no index; use cpu")
        return torch.device("cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            raise ConfigError(
                f"device {name!r} does not exist: this machine has {count} CUDA devices"
            )
        return torch.device("cuda", index)
    raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
