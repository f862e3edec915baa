"""The in-memory form of an image-classification data set: decoded uint8 arrays and class names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images as uint8 arrays in NCHW layout, with int64 labels.

    ``train_*`` is the official training part (the report splits it further); ``test_*`` is the
    official test part, scored once at the end by the ``holdout`` protocol.
    """

    train_images: np.ndarray  # (N, C, H, W) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str = ""  # human-readable origin, e.g. "imagefolder:/data/cifar10-jpeg"
    fingerprint: str = ""  # identifies the source files; keys the decode cache
    meta: dict = field(default_factory=dict)
    from_cache: bool = field(default=False, compare=False)  # read from the decode cache

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def signature(self) -> dict[str, Any]:
        """What the data set is, whatever path or format it was read from: its sizes, classes
        and a SHA-256 of its decoded pixels and labels (0.1 s for CIFAR-10). Two machines that
        decode the same images get the same signature; CIFAR-10's JPEG copy and its official
        batches do not."""
        digest = hashlib.sha256()
        for array in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            digest.update(str(array.shape).encode())
            canonical = array if array.dtype == np.uint8 else array.astype(np.int64)
            digest.update(np.ascontiguousarray(canonical).data)
        return {
            "train_images": len(self.train_labels), "test_images": len(self.test_labels),
            "image_shape": list(self.train_images.shape[1:]), "classes": list(self.classes),
            "sha256": digest.hexdigest(),
        }  # fmt: skip

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0):
        """A class-balanced random subset (for small presets and tests); ``None`` keeps all."""
        rng = np.random.default_rng(seed)
        train_idx = _balanced_indices(self.train_labels, train, self.num_classes, rng)
        test_idx = _balanced_indices(self.test_labels, test, self.num_classes, rng)
        return ImageDataset(
            self.train_images[train_idx],
            self.train_labels[train_idx],
            self.test_images[test_idx],
            self.test_labels[test_idx],
            self.classes,
            source=self.source,
            fingerprint=f"{self.fingerprint}:subset({train},{test},{seed})",
            meta=dict(self.meta),
        )


def signature_difference(stored: dict[str, Any], here: dict[str, Any]) -> str | None:
    """How the data set ``here`` differs from the ``stored`` signature, in words; None if it
    is the same data set."""
    if stored == here:
        return None
    names = {
        "classes": "classes",
        "image_shape": "image shape",
        "train_images": "training images",
        "test_images": "test images",
    }
    for key, what in names.items():
        if stored.get(key) != here.get(key):
            return f"{what} {here.get(key)} where the study's had {stored.get(key)}"
    return "the same sizes and classes, other pixels or labels (another copy or format?)"


def _balanced_indices(labels: np.ndarray, count: int | None, num_classes: int, rng) -> np.ndarray:
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    # Round-robin over classes so that any count is as balanced as the data allows.
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count:
        for indices in per_class:
            if depth < len(indices) and len(chosen) < count:
                chosen.append(int(indices[depth]))
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))
