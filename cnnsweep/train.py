"""One training run: ``train(config, data, device, on_epoch) -> RunResult``.

A linear loop in the manner of nanoGPT's: prepare the splits on the device, build the model and
optimizer, train epoch by epoch with early stopping, then score the test images once. It knows
nothing of studies or storage.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnsweep.checkpoint import RunCheckpoint
from cnnsweep.config import TrainConfig
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.data.device import REPORT_MEAN, REPORT_STD, DeviceImages, channel_stats
from cnnsweep.data.splits import fold_indices, split_indices
from cnnsweep.devices import bf16_supported, synchronize
from cnnsweep.errors import ConfigError
from cnnsweep.models import build_model
from cnnsweep.preflight import preflight
from cnnsweep.results import EpochMetrics, RunResult
from cnnsweep.steps import EagerStep, bf16_autocast, make_step

EpochCallback = Callable[[EpochMetrics], None]
BatchCallback = Callable[[int, int], None]  # (batches done in this epoch, batches per epoch)
StopCheck = Callable[[EpochMetrics], bool]  # after an epoch: stop the run here?
DIVERGENCE_CHECK_EVERY = 50  # steps; each check waits for the device, so not every step


@dataclass
class _Splits:
    train: DeviceImages
    val: DeviceImages | None
    test: DeviceImages
    train_probe: DeviceImages | None  # training images scored in eval mode each epoch
    normalization: str  # which statistics normalise the images: "report" or "train"


def train(
    config: TrainConfig,
    data: ImageDataset,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    checkpoint: RunCheckpoint | None = None,
    should_stop: StopCheck | None = None,
) -> RunResult:
    """Train one run. With ``checkpoint``, the state after each epoch is saved (as often as it
    allows), and a run that finds a checkpoint of its own resumes after that epoch.
    ``should_stop(metrics)`` after an epoch stops the run there, as pruned (a search's pruner)."""
    device = torch.device(device)
    preflight(config, data, device)  # model, batch and memory checked before anything is made
    splits = _prepare_splits(config, data, device)

    torch.manual_seed(config.seed)  # model initialisation
    model = build_model(config, data).to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 runs (--no-amp) use TF32 units
        torch.backends.cudnn.allow_tf32 = True
    step_model = _compiled(model, config) if config.compile else model
    graphed = config.cuda_graph and device.type == "cuda"  # elsewhere the eager step (steps.py)
    optimizer = make_optimizer(config, model.parameters(), capturable=graphed)
    use_bf16 = config.amp and bf16_supported(device)
    step = make_step(step_model, optimizer, use_bf16, graphed)
    # A compiled or captured step has one shape: the last partial training batch is dropped.
    drop_last = config.compile or graphed
    batch_order = torch.Generator(device=device).manual_seed(config.seed)

    history: list[EpochMetrics] = []
    stopping = EarlyStopping(config)
    stop_reason = "max_epochs"
    first_epoch, earlier_seconds = 1, 0.0
    if checkpoint is not None and (saved := checkpoint.load()) is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        keep_capturable(optimizer, graphed)  # the saved groups say what the last attempt used
        _set_random_states(saved["random"], batch_order, device)
        history = [EpochMetrics(**m) for m in saved["history"]]
        stopping = EarlyStopping.restored(config, saved)
        first_epoch, earlier_seconds = saved["epoch"] + 1, saved["train_time"]
    loop_start = time.perf_counter()
    for epoch in range(first_epoch, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_acc, trained = _train_epoch(
            step, splits.train, config, batch_order, drop_last, on_batch
        )
        synchronize(device)
        train_seconds = time.perf_counter() - epoch_start
        scores = _epoch_scores(model, splits, config, use_bf16) if math.isfinite(train_loss) else {}
        metrics = EpochMetrics(
            epoch=epoch, train_loss=train_loss, train_accuracy=train_acc, **scores,
            epoch_time=time.perf_counter() - epoch_start,
            images_per_second=trained / train_seconds,
        )  # fmt: skip
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if not math.isfinite(train_loss):
            stop_reason = "diverged"
            break
        if stopping.out_of_patience(getattr(metrics, config.monitor), epoch, model):
            stop_reason = "patience"
            break
        if should_stop is not None and epoch < config.max_epochs and should_stop(metrics):
            stop_reason = "pruned"
            break
        if checkpoint is not None and epoch < config.max_epochs and checkpoint.due():
            checkpoint.save({
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "random": _random_states(batch_order, device),
                "history": [m.model_dump() for m in history], **stopping.saved(),
                "train_time": earlier_seconds + time.perf_counter() - loop_start,
            })  # fmt: skip
    train_time = earlier_seconds + time.perf_counter() - loop_start

    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    test_loss, test_acc = evaluate(model, splits.test, config.eval_batch_size, use_bf16)
    best_epoch = stopping.best_epoch
    best = history[best_epoch - 1] if best_epoch else history[-1]
    # The epoch whose weights are tested.
    tested = best if stopping.best_state is not None else history[-1]
    return RunResult(
        config=config,
        stop_reason=stop_reason,
        epochs_trained=len(history),
        best_epoch=best_epoch,
        train_loss=history[-1].train_loss,
        train_accuracy=history[-1].train_accuracy,
        best_train_accuracy=max(_finite(m.train_accuracy) for m in history),
        train_eval_accuracy=tested.train_eval_accuracy,
        val_loss=best.val_loss,
        val_accuracy=best.val_accuracy,
        test_loss=test_loss,
        test_accuracy=test_acc,
        train_time=train_time,
        images_per_second=sum(m.images_per_second for m in history) / len(history),
        train_size=len(splits.train),
        val_size=len(splits.val) if splits.val is not None else 0,
        test_size=len(splits.test),
        device=str(device),
        precision="bf16-autocast" if use_bf16 else "fp32",
        normalization=splits.normalization,
        history=history,
        resumed_after_epoch=first_epoch - 1 if first_epoch > 1 else None,
    )


@dataclass
class EarlyStopping:
    """What early stopping keeps from epoch to epoch: the best monitored value so far, its
    epoch, its weights (with ``restore_best``) and how many epochs have passed without a gain.
    A checkpoint saves and restores all four."""

    config: TrainConfig
    best_value: float | None = None
    best_epoch: int = 0  # 0: no epoch yet
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0

    def out_of_patience(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Count one epoch's monitored value; True once ``patience`` epochs have not gained."""
        if self.best_value is None or _improved(value, self.best_value, self.config):
            self.best_value, self.best_epoch, self.waited = value, epoch, 0
            if self.config.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.config.patience

    def saved(self) -> dict:
        """The checkpoint's keys for it (as every release since checkpoints began wrote them)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch,
                "waited": self.waited, "best_state": self.best_state}  # fmt: skip

    @classmethod
    def restored(cls, config: TrainConfig, saved: dict) -> EarlyStopping:
        return cls(config, saved["best_value"], saved["best_epoch"], saved["best_state"],
                   saved["waited"])  # fmt: skip


def _epoch_scores(
    model: nn.Module, splits: _Splits, config: TrainConfig, use_bf16: bool
) -> dict[str, float]:
    """An epoch's eval-mode scores: the validation split's and the training probe's, where the
    run has them (EpochMetrics' field names)."""
    scores = {}
    if splits.val is not None:
        scores["val_loss"], scores["val_accuracy"] = evaluate(
            model, splits.val, config.eval_batch_size, use_bf16
        )
    if splits.train_probe is not None:
        scores["train_eval_loss"], scores["train_eval_accuracy"] = evaluate(
            model, splits.train_probe, config.eval_batch_size, use_bf16
        )
    return scores


def _random_states(batch_order: torch.Generator, device: torch.device) -> dict:
    """Every random stream a run draws from after its start: the batch order (and
    augmentation) and torch's global generator (dropout), on the CPU or the GPU."""
    states = {"batch_order": batch_order.get_state(), "cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_random_states(states: dict, batch_order: torch.Generator, device: torch.device) -> None:
    batch_order.set_state(states["batch_order"])
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _prepare_splits(config: TrainConfig, data: ImageDataset, device: torch.device) -> _Splits:
    """seed: training images -> train/"test"; holdout: -> train/val, plus the official test;
    kfold: -> the other folds/this fold, plus the official test."""
    if config.max_train_images or config.max_test_images:
        data = data.subset(config.max_train_images, config.max_test_images, seed=0)
    count = len(data.train_labels)
    if config.protocol == "kfold":
        train_idx, rest_idx = fold_indices(count, config.folds, config.fold, config.seed)
    else:
        train_idx, rest_idx = split_indices(count, config.split, config.seed)
    train_images = data.train_images[train_idx]
    normalization = config.normalization
    if normalization == "auto":
        normalization = "report" if config.protocol == "seed" and data.channels == 3 else "train"
    if normalization == "report":
        mean, std = REPORT_MEAN, REPORT_STD
    else:
        mean, std = channel_stats(train_images)
    if data.channels != len(mean):
        raise ConfigError(
            f"normalization 'report' needs 3-channel images; this data set has {data.channels}"
        )

    def on_device(images, labels) -> DeviceImages:
        return DeviceImages(images, labels, device, mean, std)

    train_labels = data.train_labels[train_idx]
    train = on_device(train_images, train_labels)
    rest = on_device(data.train_images[rest_idx], data.train_labels[rest_idx])
    probe = None
    if config.train_eval_images:
        # Its own generator: the probe never changes the training's random stream.
        chosen = np.random.default_rng(config.seed).permutation(len(train_idx))
        chosen = np.sort(chosen[: config.train_eval_images])
        probe = on_device(train_images[chosen], train_labels[chosen])
    if config.protocol == "seed":
        return _Splits(train, None, rest, probe, normalization)
    test = on_device(data.test_images, data.test_labels)
    return _Splits(train, rest, test, probe, normalization)


def _compiled(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The training step compiled for one static shape (the last partial batch is dropped).

    Evaluation runs the eager model: its batches (1,024 images) already amortise kernel launches,
    and its leftover sizes would otherwise each need a graph of their own. Dynamo's cache keys on
    the model's code and shapes, so later runs of the same shape in this process reuse the graph.
    """
    mode = None if config.compile_mode == "default" else config.compile_mode
    return torch.compile(model, mode=mode, dynamic=False)


def make_optimizer(
    config: TrainConfig, parameters, capturable: bool = False
) -> torch.optim.Optimizer:
    """The report's optimizers (SGD momentum 0.9, library defaults otherwise), fused if possible.
    ``capturable``: Adam's and RMSprop's step counts live on the device, so that a CUDA graph can
    capture the update (SGD keeps no count)."""
    parameters = list(parameters)
    kind, options = {
        "sgd": (torch.optim.SGD, {"momentum": 0.9}),
        "rmsprop": (torch.optim.RMSprop, {}),
        "adam": (torch.optim.Adam, {}),
    }[config.optimizer]
    if capturable and kind is not torch.optim.SGD:
        options["capturable"] = True
    # One fused kernel over all 35M parameters is much faster than a per-tensor loop, on CPU too.
    with contextlib.suppress(RuntimeError, TypeError, ValueError):
        return kind(parameters, lr=config.lr, fused=True, **options)
    return kind(parameters, lr=config.lr, foreach=True, **options)


def keep_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """After load_state_dict: the groups' ``capturable`` as this attempt needs it (the saved one
    may come from an attempt with the other setting: a speed switch may change on a resume), and
    a capturable optimizer's step counts on its parameters' device."""
    for group in optimizer.param_groups:
        if "capturable" not in group:
            continue  # SGD keeps no step count
        group["capturable"] = capturable
        for param in group["params"] if capturable else ():
            state = optimizer.state.get(param, {})
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(param.device, torch.float32)


def _train_epoch(
    step: EagerStep,
    data: DeviceImages,
    config: TrainConfig,
    generator: torch.Generator,
    drop_last: bool,
    on_batch: BatchCallback | None,
) -> tuple[float, float, int]:
    """One epoch; returns (mean loss, accuracy %, images trained). Sums stay on the device until
    the end: no step waits for the device."""
    step.model.train()
    step.start_epoch(data.device)
    seen = 0
    batches = (len(data) // config.batch_size if drop_last
               else math.ceil(len(data) / config.batch_size))  # fmt: skip
    for number, (images, labels) in enumerate(
        data.epoch_batches(config.batch_size, generator, config.augmentation, drop_last),
        start=1,
    ):
        step(images, labels)
        seen += len(labels)
        if on_batch is not None:
            on_batch(number, batches)
        if number % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(step.loss_sum):
            break  # no point in finishing an epoch of NaNs
    return step.loss_sum.item() / seen, 100.0 * step.correct.item() / seen, seen


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: DeviceImages, batch_size: int, use_bf16: bool
) -> tuple[float, float]:
    """(mean loss, accuracy %) in large batches, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=data.device)
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    for images, labels in data.eval_batches(batch_size):
        with bf16_autocast(images, use_bf16):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    return loss_sum.item() / len(data), 100.0 * correct.item() / len(data)


def _improved(value: float, best: float, config: TrainConfig) -> bool:
    if config.mode == "max":
        return value > best + config.min_delta
    return value < best - config.min_delta


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf
