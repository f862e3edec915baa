"""Before a run starts: does its model build for this data, does its batch fit its training split,
and does the whole run fit in the device's memory? Each "no" is a one-line ConfigError.

The model is built on PyTorch's ``meta`` device: shapes without storage, so even a model far too
large to allocate (``--width 1000``) is measured in milliseconds, never allocated.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnsweep.config import TrainConfig
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.data.splits import split_sizes
from cnnsweep.errors import ConfigError
from cnnsweep.models import build_model

FLOAT_BYTES = 4  # weights, gradients, optimizer state and activations are fp32 (autocast aside)
# fp32 tensors kept per parameter besides the weight itself: its gradient, plus optimizer state.
_STATE_PER_PARAMETER = {"adam": 1 + 2, "rmsprop": 1 + 1, "sgd": 1 + 1}  # exp_avg(_sq), momentum


@dataclass(frozen=True)
class Footprint:
    parameters: int
    bytes: int  # training memory, estimated (model, gradients, optimizer, activations, data)


def split_counts(config: TrainConfig, data: ImageDataset) -> tuple[int, int, int]:
    """(train, validation, test) image counts of a run, as train.py will cut them."""
    count = len(data.train_labels)
    if config.max_train_images is not None:
        count = min(count, config.max_train_images)
    test = len(data.test_labels)
    if config.max_test_images is not None:
        test = min(test, config.max_test_images)
    if config.protocol == "kfold":
        rest = len(np.array_split(np.arange(count), config.folds)[config.fold])
        return count - rest, rest, test
    train, rest = split_sizes(count, config.split)
    return (train, 0, rest) if config.protocol == "seed" else (train, rest, test)


def footprint(config: TrainConfig, data: ImageDataset) -> Footprint:
    """The run's parameter count and an estimate of the memory its training needs."""
    parameters, activations = _model_counts(
        config.model, config.width, config.batch_norm, config.dropout, config.batch_size,
        data.num_classes, data.channels, tuple(data.image_size),
    )  # fmt: skip
    per_parameter = 1 + _STATE_PER_PARAMETER[config.optimizer] + (1 if config.restore_best else 0)
    pixels = data.channels * data.image_size[0] * data.image_size[1]
    counts = split_counts(config, data)
    images = sum(counts) + min(config.train_eval_images, counts[0])  # + the eval-mode probe
    data_bytes = images * pixels * (1 + FLOAT_BYTES)  # uint8 copy + normalised fp32 copy
    # Outputs kept for the backward pass, and as many gradients of them in flight.
    total = FLOAT_BYTES * (parameters * per_parameter + 2 * activations) + data_bytes
    return Footprint(parameters, total)


@functools.lru_cache(maxsize=64)
def _model_counts(
    model: str, width: float, batch_norm: bool, dropout: bool, batch_size: int,
    num_classes: int, channels: int, image_size: tuple[int, int],
) -> tuple[int, int]:  # fmt: skip
    """(parameters, activations per training batch) of a model, measured on ``meta`` once per
    shape in a process: 40 ms a run on a 2-core AVX2 CPU, a quarter of a tiny run's time, where
    a worker trains many runs of one shape (every seed, learning rate, optimizer and split)."""
    shape = SimpleNamespace(model=model, width=width, batch_norm=batch_norm, dropout=dropout)
    data = SimpleNamespace(num_classes=num_classes, channels=channels, image_size=image_size)
    with torch.device("meta"), _ShapesOnly():
        network = build_model(shape, data)
        activations = _activation_count(network, batch_size, data)
    return sum(p.numel() for p in network.parameters()), activations


_SAME_SHAPE = {torch.nn.functional.batch_norm, torch.nn.functional.dropout}


class _ShapesOnly(TorchFunctionMode):
    """On ``meta`` only shapes exist, and some of its kernels that AlexNet uses (``normal_``,
    ``linear``, ``batch_norm``, ``dropout``) import TorchDynamo the first time, a second of each
    ``cnnsweep run``'s start: here random initialisation is a no-op and a layer's output an
    empty tensor of its shape. (ResNet's residual path still imports it: a second, once.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.normal_:
            return args[0]
        if func in _SAME_SHAPE:
            return args[0].new_empty(args[0].shape)
        if func is torch.nn.functional.linear:
            inputs, weight = args[0], args[1]
            return inputs.new_empty((*inputs.shape[:-1], weight.shape[0]))
        return func(*args, **(kwargs or {}))


def _activation_count(model: nn.Module, batch_size: int, data) -> int:
    """Numbers every leaf module outputs for one training batch (a forward pass on meta)."""
    counted = []

    def count(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            counted.append(output.numel())

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model(torch.empty(batch_size, data.channels, *data.image_size))
    except (RuntimeError, ValueError) as exc:
        name = model.__class__.__name__
        raise ConfigError(f"model {name} cannot take images of this size: {exc}") from None
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counted)


def device_memory(device: torch.device) -> int:
    """Total memory of ``device`` in bytes (the machine's RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Memory the machine can give a new process now (``MemAvailable``), in bytes."""
    try:
        for line in open("/proc/meminfo"):  # noqa: SIM115
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return device_memory(torch.device("cpu"))


def preflight(config: TrainConfig, data: ImageDataset, device: torch.device) -> Footprint:
    """Refuse, in one line, a run that cannot start or cannot fit; else return its footprint."""
    train, _, _ = split_counts(config, data)
    if config.batch_size > train:
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the training split ({train} images)"
        )
    needed = footprint(config, data)
    available = device_memory(torch.device(device))
    if needed.bytes > available:
        raise ConfigError(
            f"model {config.model} at width {config.width:g} has {needed.parameters:,} "
            f"parameters: training it needs about {_gib(needed.bytes)}, more than the "
            f"{_gib(available)} of memory on {device}"
        )
    return needed


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"
