"""Source ``cifar10``: the official python archive ``cifar-10-python.tar.gz``.

It can be downloaded (with a progress bar, MD5-verified, extracted safely into the cache), read
straight from a local copy of the archive, or read from its extracted folder.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from cnnsweep.data.archives import name_parts
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_SIZE = 170_498_071  # bytes, of the official archive
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
BATCH_FILES = frozenset({*TRAIN_BATCHES, TEST_BATCH, META_FILE})


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain, so a hostile file cannot run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name}")


def _unpickle(blob: bytes, name: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"corrupt CIFAR-10 batch file {name}: {exc}") from None
    if not isinstance(batch, dict):
        raise DataError(f"corrupt CIFAR-10 batch file {name}: not a dictionary")
    return batch


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"CIFAR-10 batch file {name} lacks usable data/labels: {exc}") from None
    if labels.ndim != 1 or len(data) != len(labels):
        raise DataError(f"CIFAR-10 batch file {name}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _assemble(blobs: dict[str, bytes], source: str, fingerprint: str) -> ImageDataset:
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META_FILE) if n not in blobs]
    if missing:
        raise DataError(f"CIFAR-10 data in {source} is missing {', '.join(missing)}")
    train = [_batch_arrays(_unpickle(blobs[n], n), n) for n in TRAIN_BATCHES]
    test_x, test_y = _batch_arrays(_unpickle(blobs[TEST_BATCH], TEST_BATCH), TEST_BATCH)
    meta = _unpickle(blobs[META_FILE], META_FILE)
    try:
        classes = tuple(n.decode() for n in meta.get(b"label_names", []))
    except (AttributeError, UnicodeDecodeError):
        raise DataError(f"CIFAR-10 {META_FILE} in {source} has unreadable label_names") from None
    if not classes:
        raise DataError(f"CIFAR-10 {META_FILE} in {source} has no label_names")
    for name, (_, labels) in zip(
        (*TRAIN_BATCHES, TEST_BATCH), [*train, (test_x, test_y)], strict=True
    ):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            bad = labels[(labels < 0) | (labels >= len(classes))][0]
            raise DataError(
                f"CIFAR-10 batch file {name} in {source} has label {bad}, outside "
                f"0..{len(classes) - 1} ({len(classes)} classes)"
            )
    return ImageDataset(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        classes,
        source=f"cifar10:{source}",
        fingerprint=fingerprint,
    )


def read_folder(folder: Path, fingerprint: str) -> ImageDataset:
    """Read the extracted ``cifar-10-batches-py`` folder."""
    blobs = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH, META_FILE):
        path = folder / name
        if path.is_file():
            blobs[name] = path.read_bytes()
    return _assemble(blobs, str(folder), fingerprint)


def is_batch_member(member: tarfile.TarInfo) -> bool:
    parts = name_parts(member.name)
    return bool(parts) and parts[-1] in BATCH_FILES


def from_members(
    members: list[tuple[tarfile.TarInfo, bytes]], archive: Path, fingerprint: str
) -> ImageDataset:
    """The data set from an archive's batch members, read straight out of it (verified to its
    end: archives.py); nothing is extracted, so no path can escape."""
    blobs = {Path(member.name).name: content for member, content in members}
    return _assemble(blobs, str(archive), fingerprint)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    actual = file_md5(path)
    if actual != expected:
        raise DataError(f"checksum mismatch for {path}: MD5 {actual}, expected {expected}")


def download(url: str, destination: Path, md5: str, *, progress: bool = True) -> Path:
    """Download ``url`` to ``destination``, verifying ``md5`` before the file is put in place.

    The bytes go to a temporary file beside the destination; a failed or mismatching download is
    deleted, so the cache never holds a bad archive.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=".download-")
    staging = Path(name)
    try:
        with open(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=destination.name,
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_md5(staging, md5)
        staging.replace(destination)  # atomic on the same file system
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(f"cannot download {url}: {exc}") from None
    finally:
        staging.unlink(missing_ok=True)
    return destination


def safe_extract(archive: Path, target: Path) -> None:
    """Extract with the ``data`` filter: absolute paths, ``..``, outward links are refused."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                resolved = (target / member.name).resolve()
                if not resolved.is_relative_to(target.resolve()):
                    raise DataError(f"unsafe path in archive {archive}: {member.name}")
            tar.extractall(target, filter="data")
    except tarfile.TarError as exc:
        raise DataError(f"cannot extract archive {archive}: {exc}") from None
