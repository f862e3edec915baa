"""Training throughput: the report's own loop vs cnnsweep's trainer, same process, data and model.

(a) The report's script reproduced faithfully: a Dataset that turns each uint8 image into a PIL
    image, resizes it, converts it to a float tensor and normalises it; a DataLoader (batch 64,
    shuffle, no workers); fp32 NCHW; the optimizer built with its defaults; ``.item()`` per step.
(b) ``cnnsweep.train.train``: device-resident data, whole-epoch preparation, channels_last,
    bf16 autocast where supported, fused optimizer.

Both train the report's AlexNet with batch norm, Adam (lr 1e-3), batch 64, on the same training
images, for two epochs; the second epoch is timed (the first warms allocators and caches). With
``--epochs E`` each trains E epochs and its fastest after the first counts, as timeit's best of
repeats does: a short epoch on a busy machine can lose half its speed to another process. The two
sides' epochs alternate (cnnsweep's, then the report loop's, and again), so that a busy spell of
the machine slows both sides rather than one.

    python bench/throughput.py --data ../shared/data/cifar10-jpeg.tar.xz
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cnnsweep.config import make_config
from cnnsweep.data import load_data
from cnnsweep.data.device import REPORT_MEAN, REPORT_STD
from cnnsweep.data.splits import split_indices
from cnnsweep.devices import resolve_device
from cnnsweep.models import create_model
from cnnsweep.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.xz"
SPLIT = 0.9
BATCH = 64


class ReportTransformDataset(Dataset):
    """torchvision's CIFAR10 + Compose([Resize, ToTensor, Normalize]), without torchvision."""

    def __init__(self, images_nchw: np.ndarray, labels: np.ndarray) -> None:
        self.images = images_nchw.transpose(0, 2, 3, 1)  # CIFAR10 keeps HWC uint8
        self.labels = labels
        self.mean = torch.tensor(REPORT_MEAN).view(3, 1, 1)
        self.std = torch.tensor(REPORT_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        image = image.resize((32, 32), Image.Resampling.BILINEAR)  # transforms.Resize((32, 32))
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)  # ToTensor
        return (tensor - self.mean) / self.std, int(self.labels[index])  # Normalize


def report_loop_epochs(
    images, labels, device, width: float, seed: int, batch_size: int = BATCH
) -> Iterator[float]:
    """The report's loop, one epoch a ``next()``: that epoch's training images/s. Its random
    streams are its own (model initialisation, shuffling), so that it may run between the
    epochs of another run without changing that run."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = create_model("alexnet", batch_norm=True, width=width).to(device)
    dataset = ReportTransformDataset(images, labels)
    shuffle = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=shuffle)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for epoch in itertools.count(1):
        model.train()
        correct, total, epoch_loss = 0, 0, 0.0
        start = time.perf_counter()
        for batch, targets in tqdm(
            loader, desc=f"report loop, epoch {epoch}", leave=False, disable=None
        ):
            batch, targets = batch.to(device), targets.to(device)
            optimizer.zero_grad()
            outputs = model(batch)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
            _, predicted = outputs.max(1)
            total += targets.size(0)
            correct += predicted.eq(targets).sum().item()
        yield len(labels) / (time.perf_counter() - start)


def report_loop_images_per_second(
    images, labels, device, width: float, seed: int, batch_size: int = BATCH, epochs: int = 2
) -> float:
    """The fastest epoch after the first, in training images/s."""
    epochs_run = report_loop_epochs(images, labels, device, width, seed, batch_size)
    return max(itertools.islice(epochs_run, 1, epochs))


def cnnsweep_images_per_second(
    data, device, width: float, subset: int, seed: int, epochs: int = 2, after_epoch=None
) -> float:
    """The fastest epoch after the first, in training images/s; ``after_epoch()`` runs after each
    epoch, outside its timing."""
    config = make_config(
        batch_norm=True,
        optimizer="adam",
        lr=1e-3,
        batch_size=BATCH,
        width=width,
        split=SPLIT,
        max_train_images=subset,
        max_test_images=1000,
        max_epochs=epochs,
        patience=epochs,
        seed=seed,
    )
    on_epoch = (lambda _metrics: after_epoch()) if after_epoch else None
    result = train(config, data, device, on_epoch=on_epoch)
    return max(metrics.images_per_second for metrics in result.history[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--width", type=float, default=1.0, help="1.0 is the report's network")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2, help="each side's fastest after the 1st")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is not timed")

    device = resolve_device(args.device)
    data = load_data(args.data)
    subset = math.ceil(args.images / SPLIT)  # so that the training split holds ~args.images
    sample = data.subset(subset, 1000, seed=0)  # the same images train() will draw
    train_idx, _ = split_indices(len(sample.train_labels), SPLIT, args.seed)
    images, labels = sample.train_images[train_idx], sample.train_labels[train_idx]

    # An epoch of the report's loop after each of cnnsweep's: a busy spell slows both sides.
    report_epochs = report_loop_epochs(images, labels, device, args.width, args.seed)
    reference_rates: list[float] = []

    def report_epoch() -> None:
        reference_rates.append(next(report_epochs))

    ours = cnnsweep_images_per_second(
        data, device, args.width, subset, args.seed, args.epochs, report_epoch
    )
    reference = max(reference_rates[1:])
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    figures = {
        "device": str(device),
        "machine": machine,
        "torch": torch.__version__,
        "width": args.width,
        "train_images": len(labels),
        "batch_size": BATCH,
        "epochs": args.epochs,
        "report_loop_img_per_s": round(reference, 1),
        "cnnsweep_img_per_s": round(ours, 1),
        "ratio": round(ours / reference, 2),
    }
    print(f"device          {figures['device']} ({machine}), torch {torch.__version__}")
    print(f"model           AlexNet width {args.width}, batch norm, Adam lr 1e-3, batch {BATCH}")
    timed = "second of two epochs" if args.epochs == 2 else f"fastest of epochs 2-{args.epochs}"
    print(f"images/epoch    {len(labels)} ({timed} timed)")
    print(f"report loop     {reference:8.1f} img/s")
    print(f"cnnsweep        {ours:8.1f} img/s")
    print(f"ratio           {ours / reference:8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
    gc.freeze()  # the exit then skips a last collection of all torch loaded (about 1 s)
