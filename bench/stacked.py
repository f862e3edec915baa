"""P runs of one shape trained as one stacked model, for bench/gpu.py's section (b2): a
measurement, not a training mode of cnnsweep (yet).

Issue 8 asks whether P runs that share a shape (model, batch size, optimizer; other learning
rates and seeds) train faster as one model than as P processes. On a GPU the step of the report's
AlexNet is bound by launching its ~100 kernels, and separate processes do not run their kernels
at the same time (the GPU time-slices between them): stacking makes each kernel P times larger
instead, as HFTA's fused models do. The stack here is ``torch.func``'s: every run keeps its own
parameters (leaf tensors, one optimizer parameter group each, so each has its own learning rate),
and each step stacks them and maps the model over the runs with ``vmap``. Each run draws its own
batch and its own dropout (``randomness="different"``).

What a training mode would still need, and this does not do: the running statistics of batch
norm are updated in the stacked copy and dropped (they matter for evaluation, not for the speed
of training), the loss is the mean over all P x B images (each run's gradient is 1/P of its own:
Adam's update barely changes, SGD's would), and runs cannot stop early one by one.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.func import functional_call, vmap

from cnnsweep.steps import make_step


class StackedRuns(nn.Module):
    """P models of one architecture as one: images [P, B, C, H, W] -> logits [P * B, classes]."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.runs = nn.ModuleList(models)
        self._template = [copy.deepcopy(models[0]).to("meta")]  # a list: not a submodule
        self._parameter_names = [name for name, _ in models[0].named_parameters()]
        self._buffer_names = [name for name, _ in models[0].named_buffers()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        template = self._template[0]
        template.train(self.training)

        def one_run(parameters: dict, buffers: dict, batch: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (parameters, buffers), (batch,))

        # Each run's tensors by name, looked up once a step (the host's time is what is measured).
        own_parameters = [dict(run.named_parameters()) for run in self.runs]
        own_buffers = [dict(run.named_buffers()) for run in self.runs]
        parameters = {name: torch.stack([own[name] for own in own_parameters])
                      for name in self._parameter_names}  # fmt: skip
        buffers = {name: torch.stack([own[name] for own in own_buffers])
                   for name in self._buffer_names}  # fmt: skip
        logits = vmap(one_run, randomness="different")(parameters, buffers, images)
        return logits.flatten(0, 1)


def stacked_images_per_second(
    make_model, learning_rates: list[float], images: torch.Tensor, labels: torch.Tensor,
    batch_size: int, use_bf16: bool, graphed: bool, seconds: float,
) -> float:  # fmt: skip
    """Training images/s of len(learning_rates) runs stacked, Adam, each run drawing its own
    random batches of ``images`` (normalised, on the device) for about ``seconds`` after a
    warm-up (and, ``graphed``, the capture of the whole step in a CUDA graph)."""
    device = images.device
    count = len(learning_rates)
    model = StackedRuns([make_model() for _ in learning_rates]).to(device)
    runs = zip(model.runs, learning_rates, strict=True)
    groups = [{"params": run.parameters(), "lr": lr} for run, lr in runs]  # a rate per run
    options = {"capturable": True} if graphed else {}
    try:
        optimizer = torch.optim.Adam(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device
        optimizer = torch.optim.Adam(groups, foreach=True, **options)
    step = make_step(model, optimizer, use_bf16, graphed)
    step.start_epoch(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def train_steps(steps: int) -> None:
        for _ in range(steps):
            picks = torch.randint(len(images), (count, batch_size), device=device,
                                  generator=generator)  # fmt: skip
            step(images[picks], labels[picks].flatten())

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm-up: cuDNN's choices and the optimizer's state; a graph's three eager steps, its
    # capture and a first replay.
    train_steps(5 if graphed else 2)
    synchronize()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        train_steps(10)
        steps += 10
        synchronize()
    return steps * count * batch_size / (time.perf_counter() - start)


def largest_difference_from_each_run(model: StackedRuns, images: torch.Tensor) -> float:
    """The largest difference between the stacked logits and each run's own, in eval mode, for
    images [P, B, C, H, W]: the stack computes what its runs would."""
    model.eval()
    with torch.no_grad():
        stacked = model(images).unflatten(0, (len(model.runs), -1))
        alone = torch.stack([run(batch) for run, batch in zip(model.runs, images, strict=True)])
    model.train()
    return float((stacked - alone).abs().max())
