"""The decoded-data cache: uint8 arrays saved as .npy files, keyed by a fingerprint of the source.

Decoding 60,000 JPEGs takes seconds; loading the cached arrays takes well under one. A cache
entry is written to a temporary folder and renamed into place, so a crash never leaves half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cnnsweep.data.dataset import ImageDataset

CACHE_ENV = "CNNSWEEP_CACHE"
# Bump when decoding changes so that old cache entries are not reused.
DECODE_VERSION = 1
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_root() -> Path:
    """``$CNNSWEEP_CACHE``, else ``$XDG_CACHE_HOME/cnnsweep``, else ``~/.cache/cnnsweep``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnsweep"


def fingerprint_files(kind: str, root: Path, files: Iterable[Path]) -> str:
    """Hash of each file's relative path, size and modification time (cheap: no file is read)."""
    digest = hashlib.sha256(f"{kind}:v{DECODE_VERSION}".encode())
    for path in sorted(files):
        stat = path.stat()
        rel = path.relative_to(root) if path != root else Path(path.name)
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def load_cached(fingerprint: str) -> ImageDataset | None:
    folder = cache_root() / "datasets" / fingerprint
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
    except (OSError, ValueError):
        return None  # a damaged entry is simply decoded again
    return ImageDataset(
        **arrays,
        classes=tuple(meta["classes"]),
        source=meta["source"],
        fingerprint=fingerprint,
        meta=meta.get("meta", {}),
    )


def save_cached(dataset: ImageDataset) -> None:
    """Write the entry atomically; a cache that cannot be written only costs a re-decode later."""
    parent = cache_root() / "datasets"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    except OSError:
        return
    try:
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(dataset, name))
        meta = {"classes": list(dataset.classes), "source": dataset.source, "meta": dataset.meta}
        (staging / "meta.json").write_text(json.dumps(meta))
        os.replace(staging, parent / dataset.fingerprint)
    except OSError:
        pass  # another process won the race, or the disk is full: both are harmless
    finally:
        shutil.rmtree(staging, ignore_errors=True)
