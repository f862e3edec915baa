"""The training step: forward, loss, backward, the optimizer's update, and the epoch's sums.

``EagerStep`` runs it op by op, as PyTorch does by default. ``CudaGraphStep`` captures the whole
step, optimizer included, in one CUDA graph and replays it for every batch. On a GPU the eager
step of the report's AlexNet is bound by the host: on an H200 it took about 4.9 ms at batch 64
and at batch 32 alike, for 0.09 ms of arithmetic, and torch.compile's CUDA graphs of the forward
and backward pass alone took 2.3 ms (bench/results/gpu-h200-2026-11-28.json). A replay launches
every kernel of the step at once. (PyTorch's "whole network capture" recipe, see
https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs.)

Both keep the loss and accuracy sums on the device, so that no step waits for it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class EagerStep:
    """One training step, op by op."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, use_bf16: bool) -> None:
        self.model, self.optimizer, self.use_bf16 = model, optimizer, use_bf16
        self.loss_sum: torch.Tensor | None = None  # sum of per-image losses this epoch
        self.correct: torch.Tensor | None = None  # images classified correctly this epoch

    def start_epoch(self, device: torch.device) -> None:
        """Zero the sums (in place: a captured graph adds to these very tensors)."""
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), device=device)
            self.correct = torch.zeros((), dtype=torch.long, device=device)
        else:
            self.loss_sum.zero_()
            self.correct.zero_()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._forward_backward_update(images, labels)

    def _forward_backward_update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with self._autocast(images):
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()

    def _autocast(self, images: torch.Tensor):
        return bf16_autocast(images, self.use_bf16)


class CudaGraphStep(EagerStep):
    """The whole step captured once in a CUDA graph, then replayed for each batch.

    The first ``WARMUP_STEPS`` batches train eagerly on a side stream, as CUDA's capture rules
    ask (cuDNN picks its kernels, the optimizer makes its state); the next batch is captured and
    then replayed, as is every later one. Each batch is copied into the graph's own input tensors.
    Every batch must have the capture's shape: the caller drops a last partial batch. Gradients
    are made inside the capture (set to None before it), so each replay writes them afresh.
    The optimizer must be capturable (its step counts on the device: make_optimizer does this).
    """

    WARMUP_STEPS = 3

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, use_bf16: bool) -> None:
        super().__init__(model, optimizer, use_bf16)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_images: torch.Tensor | None = None
        self.static_labels: torch.Tensor | None = None
        self.eager_steps = 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.static_images is None:
            # The batch's own layout (channels_last from the data, bench/stacked.py's 5-d stack).
            self.static_images = images.clone(memory_format=torch.preserve_format)
            self.static_labels = labels.clone()
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        if self.graph is None:
            if self.eager_steps < self.WARMUP_STEPS:
                self._warm_up()
                return
            self._capture()
        self.graph.replay()  # the captured step, on this batch (a capture itself runs nothing)

    def _warm_up(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            self._forward_backward_update(self.static_images, self.static_labels)
        torch.cuda.current_stream().wait_stream(side)
        self.eager_steps += 1

    def _capture(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)  # gradients then live in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._forward_backward_update(self.static_images, self.static_labels)

    def _autocast(self, images: torch.Tensor):
        return bf16_autocast(images, self.use_bf16, cache=False)


def make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, use_bf16: bool, graphed: bool
) -> EagerStep:
    """The step for this run: graphed (a CUDA device only) or eager."""
    return (CudaGraphStep if graphed else EagerStep)(model, optimizer, use_bf16)


def bf16_autocast(images: torch.Tensor, use_bf16: bool, cache: bool = True):
    """bf16 autocast on the images' device, or nothing. ``cache=False`` for a CUDA graph's
    capture: weights cast once, at capture, would never be cast again."""
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, cache_enabled=cache)
