"""FLOPs: what one training image costs a model, and what the device's matmul units can do.

Their ratio gives model FLOP utilisation (MFU): the share of the device's measured peak that
training actually used. Counting uses PyTorch's FlopCounterMode (matmuls and convolutions, the
terms that dominate a CNN), on the ``meta`` device so that no memory is allocated.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnsweep.config import TrainConfig
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.models import build_model


def training_flops_per_image(config: TrainConfig, data: ImageDataset, batch: int = 8) -> float:
    """FLOPs of one forward and backward pass per image (the optimizer step is not counted)."""
    with torch.device("meta"):
        model = build_model(config, data)
        images = torch.empty(batch, data.channels, *data.image_size)
        labels = torch.zeros(batch, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch


def matmul_peak_flops(device: torch.device, bf16: bool, seconds: float = 1.0) -> float:
    """The device's measured dense matmul rate in FLOP/s (bf16 or fp32), over about ``seconds``.

    Large square matmuls (8192 on a GPU, 1024 on a CPU) are as close to the hardware's peak as
    PyTorch gets; MFU against this measured figure is honest about what the device can reach.
    """
    size = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: kernels chosen, clocks up
    _sync(device)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            torch.matmul(a, b)
        repeats += 4
        _sync(device)
    elapsed = time.perf_counter() - start
    return 2 * size**3 * repeats / elapsed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
