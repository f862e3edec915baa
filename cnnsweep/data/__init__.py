"""Data: sources, the decode cache, seeded splits, and device-resident batches."""

from cnnsweep.data.dataset import ImageDataset
from cnnsweep.data.loading import detect, ensure_cifar10, load_data

__all__ = ["ImageDataset", "detect", "ensure_cifar10", "load_data"]
