"""The decoded-data cache: uint8 arrays saved as .npy files, keyed by a fingerprint of the source.

Decoding 60,000 JPEGs takes seconds; mapping the cached arrays takes milliseconds. A cache entry
is written to a temporary folder and renamed into place, so a crash never leaves half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cnnsweep.data.dataset import ImageDataset

log = logging.getLogger("cnnsweep.data.cache")

CACHE_ENV = "CNNSWEEP_CACHE"
# Bump when decoding changes so that old cache entries are not reused. 2: archives are verified
# to their end (archives.py), so an entry decoded from a damaged archive by version 1 is dropped.
DECODE_VERSION = 2
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
    """The cached data set, or None when there is none or the entry is damaged (then the caller
    decodes again and :func:`save_cached` replaces the entry)."""
    folder = cache_root() / "datasets" / fingerprint
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        # Memory-mapped, read-only: the worker processes of one machine share these pages (the
        # page cache) instead of each holding a copy (180 MB for CIFAR-10), and each reads only
        # what it uses (a preset's subset). Entries are replaced by renaming, never rewritten, so
        # a mapped file never changes underneath.
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False, mmap_mode="r")
                  for name in _ARRAYS}  # fmt: skip
        dataset = ImageDataset(
            **arrays,
            classes=tuple(meta["classes"]),
            source=meta["source"],
            fingerprint=fingerprint,
            meta=meta.get("meta", {}),
            from_cache=True,
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return dataset if _consistent(dataset) else None


def _consistent(data: ImageDataset) -> bool:
    """Arrays of the right kinds and shapes, labels naming existing classes."""
    images, labels = (data.train_images, data.test_images), (data.train_labels, data.test_labels)
    return (
        len(data.classes) > 0
        and all(a.dtype == np.uint8 and a.ndim == 4 for a in images)
        and images[0].shape[1:] == images[1].shape[1:]
        and all(b.dtype == np.int64 and b.ndim == 1 for b in labels)
        and all(len(a) == len(b) for a, b in zip(images, labels, strict=True))
        and all(len(b) == 0 or (b.min() >= 0 and b.max() < len(data.classes)) for b in labels)
    )


def save_cached(dataset: ImageDataset) -> None:
    """Write the entry atomically, replacing a damaged one; a data set read from the cache is not
    written again. A cache that cannot be written only costs a re-decode later."""
    if dataset.from_cache:
        return
    parent = cache_root() / "datasets"
    target = parent / dataset.fingerprint
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    except OSError as exc:  # $CNNSWEEP_CACHE naming a file, say: said, as it costs each command
        log.warning("cnnsweep: cannot write the decode cache in %s (%s): the data will be "
                    "decoded again by the next command", parent, exc.strerror)  # fmt: skip
        return
    try:
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(dataset, name))
        meta = {"classes": list(dataset.classes), "source": dataset.source, "meta": dataset.meta}
        (staging / "meta.json").write_text(json.dumps(meta))
        if target.exists():  # a damaged entry (a sound one would have been read): out of the way
            trash = Path(tempfile.mkdtemp(prefix=".old-", dir=parent))
            os.replace(target, trash / "entry")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging, target)
    except OSError:
        pass  # another process won the race, or the disk is full: both are harmless
    finally:
        shutil.rmtree(staging, ignore_errors=True)
