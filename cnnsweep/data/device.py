"""Device-resident data: the whole split lives on the device as uint8, and each epoch is prepared
in a few large tensor operations (shuffle, augmentation, normalisation); batches are then views.

There is no DataLoader and no per-image Python in the training loop: on a GPU this removes the
host-to-device copy per step, and on a CPU the per-image transform that dominates the report's loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

# The report's transforms.Normalize constants (CIFAR-10 RGB).
REPORT_MEAN = (0.4914, 0.4822, 0.4465)
REPORT_STD = (0.2478, 0.2435, 0.2616)
CROP_PADDING = 4  # pixels, the standard CIFAR random-crop padding


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images, on the 0-1 scale."""
    flat = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    mean = flat.mean(axis=1, dtype=np.float64) / 255.0
    std = np.sqrt((flat.astype(np.float32) / 255.0).var(axis=1, dtype=np.float64))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def _writable_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a CPU tensor that torch may write to: shared with a writable array, copied
    from a read-only one (the decode cache's memory-mapped arrays), which torch must not touch."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class DeviceImages:
    """One split (train, validation or test) on ``device``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.device = device
        self.images = _writable_tensor(images).to(device)
        self.labels = _writable_tensor(labels).to(device)
        shape = (1, len(mean), 1, 1)
        # Folding /255 into the affine map makes normalisation one multiply-add per pixel.
        self._scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(shape)
        self._shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(
            shape
        )
        self._normalized: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> normalised float32 in channels_last memory format."""
        out = images.to(torch.float32).mul_(self._scale).add_(self._shift)
        return out.contiguous(memory_format=torch.channels_last)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed order, normalised once and kept (evaluation data never changes)."""
        if self._normalized is None:
            self._normalized = self.normalize(self.images)
        for start in range(0, len(self), batch_size):
            yield (
                self._normalized[start : start + batch_size],
                self.labels[start : start + batch_size],
            )

    def epoch_batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        augment: str = "none",
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled (and optionally augmented) epoch, prepared whole, served as views.

        A last batch of one image is dropped: batch norm cannot train on a single sample.
        ``drop_last`` drops any last partial batch, so that every step has the same shape (a
        compiled step then needs one graph, not one per leftover size).
        """
        order = torch.randperm(len(self), device=self.device, generator=generator)
        images, labels = self.images[order], self.labels[order]
        if augment == "crop+flip":
            images = random_crop_flip(images, generator)
        elif augment == "flip":
            images = random_flip(images, generator)
        elif augment != "none":
            raise ValueError(f"unknown augmentation {augment!r}")
        images = self.normalize(images)
        for start in range(0, len(self), batch_size):
            left = len(self) - start
            if (left == 1 or (drop_last and left < batch_size)) and start > 0:
                break
            yield images[start : start + batch_size], labels[start : start + batch_size]


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop from a zero-padded copy (4 px each side) and a horizontal flip, per image.

    Done for a whole batch of images at once: one masked copy per possible vertical shift, then
    per horizontal shift (2 x 9 operations), instead of one Python call per image.
    """
    pad = CROP_PADDING
    count, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    shift_y = torch.randint(0, 2 * pad + 1, (count,), device=device, generator=generator)
    shift_x = torch.randint(0, 2 * pad + 1, (count,), device=device, generator=generator)
    rows = torch.empty_like(padded[:, :, :height, :])
    for dy in range(2 * pad + 1):
        chosen = shift_y == dy
        rows[chosen] = padded[chosen, :, dy : dy + height, :]
    out = torch.empty_like(images)
    for dx in range(2 * pad + 1):
        chosen = shift_x == dx
        out[chosen] = rows[chosen, :, :, dx : dx + width]
    return random_flip(out, generator)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped horizontally with probability 1/2 (in place; returns ``images``)."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    images[flip] = images[flip].flip(-1)
    return images
