"""Seeded splits of the training images: by fraction (the report's 70/30 and 90/10), or into
k folds for cross-validation."""

from __future__ import annotations

import numpy as np

from cnnsweep.errors import ConfigError


def split_sizes(count: int, fraction: float) -> tuple[int, int]:
    """How many of ``count`` images each side of the split gets (the report's ``int`` cut)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"invalid split fraction {fraction}: must be between 0 and 1, exclusive")
    first = int(count * fraction)
    if first == 0 or first == count:
        raise ConfigError(f"split {fraction} of {count} images leaves one side empty")
    return first, count - first


def split_indices(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(count)`` with ``seed`` and cut it at ``int(count * fraction)``.

    The cut is the report's ``train_len = int(len(full_dataset) * train_frac)``; the shuffle is
    the same for every configuration with the same seed, so runs that differ only in a training
    setting see the same images.
    """
    first, _ = split_sizes(count, fraction)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[:first]), np.sort(order[first:])


def fold_indices(count: int, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices for ``fold`` of ``folds``: ``range(count)`` shuffled with
    ``seed`` and cut into ``folds`` near-equal parts; part ``fold`` validates, the rest train.
    Over the folds, the validation parts are disjoint and cover every image once."""
    if not 2 <= folds <= count:
        raise ConfigError(f"{folds} folds of {count} images: need 2 to {count} folds")
    parts = np.array_split(np.random.default_rng(seed).permutation(count), folds)
    train = np.concatenate([p for i, p in enumerate(parts) if i != fold])
    return np.sort(train), np.sort(parts[fold])
