"""Source ``imagefolder``: ``train/<class>/*`` and ``test/<class>/*`` images, in a folder or a tar.

Images may be JPEG or PNG, of any size, grayscale or colour. The data set takes 1 channel when
every image is grayscale and 3 otherwise; images whose size differs from the most common one are
resized to it (bilinear), so that the whole set is one array.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import os
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnsweep.data.archives import name_parts
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.errors import DataError
from cnnsweep.machine import usable_cores

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}

# (split, class, display name, raw bytes or path)
Entry = tuple[str, str, str, "bytes | Path"]


def find_root(folder: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/``: ``folder`` itself or its only sub-folder."""
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if len(children) == 1 and all((children[0] / s).is_dir() for s in SPLITS):
        return children[0]
    return None


def folder_entries(root: Path) -> list[Entry]:
    entries: list[Entry] = []
    for split in SPLITS:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    entries.append((split, class_dir.name, str(path), path))
    return entries


def folder_files(root: Path) -> list[Path]:
    """Every image file that :func:`folder_entries` reads (for fingerprinting)."""
    return [entry[3] for entry in folder_entries(root)]


def is_image_member(member: tarfile.TarInfo) -> bool:
    parts = name_parts(member.name)
    if len(parts) < 3:
        return False
    split, _, filename = parts[-3:]
    return split in SPLITS and os.path.splitext(filename)[1].lower() in IMAGE_SUFFIXES


def entry_name(archive: Path, member: tarfile.TarInfo) -> str:
    """How an archive's image is named in errors and in Decoding's results."""
    return f"{archive}:{member.name}"


def member_entries(members: list[tuple[tarfile.TarInfo, bytes]], archive: Path) -> list[Entry]:
    """Image members laid out as ``[prefix/]train|test/<class>/<file>`` (is_image_member), as
    read from the archive (read_members: in one pass, verified to the archive's end)."""
    entries: list[Entry] = []
    for member, blob in members:
        split, class_name, _ = name_parts(member.name)[-3:]
        entries.append((split, class_name, entry_name(archive, member), blob))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return entries


@contextlib.contextmanager
def _bombs_refused() -> Iterator[None]:
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; within this, both are
    refused (by _open): such an image is a decompression bomb, or at least no training image.
    Entered once a chunk of images: catch_warnings costs 25 us, a fifth of a 32x32 JPEG's
    decoding (AVX2-only CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _open(name: str, content: bytes | Path) -> Image.Image:
    """The image, loaded; called within _bombs_refused()."""
    try:
        image = Image.open(io.BytesIO(content) if isinstance(content, bytes) else content)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image too large {name}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt image {name}: {exc}") from None
    return image


def _classes(entries: Iterable[Entry], source: str) -> tuple[str, ...]:
    found = {split: sorted({e[1] for e in entries if e[0] == split}) for split in SPLITS}
    if not found["train"]:
        raise DataError(f"no class folders with images under {source}/train")
    if found["train"] != found["test"]:
        only_train = sorted(set(found["train"]) - set(found["test"]))
        only_test = sorted(set(found["test"]) - set(found["train"]))
        raise DataError(
            f"train and test have different classes in {source}: "
            f"only in train {only_train}, only in test {only_test}"
        )
    return tuple(found["train"])


def decode(
    entries: list[Entry], source: str, fingerprint: str,
    done: dict[str, list[Decoded]] | None = None,
) -> ImageDataset:  # fmt: skip
    """Decode every image (in parallel when there are many) into uint8 NCHW arrays; ``done``:
    the images already decoded, by entry name (Decoding, while an archive was read; entries of
    one name in the order they were added)."""
    classes = _classes(entries, source)
    class_index = {name: i for i, name in enumerate(classes)}
    if done is None:
        decoded = _decode_all([(name, content) for _, _, name, content in entries])
    else:
        decoded = [done[name].pop(0) for _, _, name, _ in entries]
    grayscale = all(gray for gray, _, _ in decoded)
    mode, channels = ("L", 1) if grayscale else ("RGB", 3)
    width, height = Counter(size for _, size, _ in decoded).most_common(1)[0][0]
    needed = len(decoded) * channels * width * height  # bytes of the uint8 arrays
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory // 2:
        raise DataError(
            f"{len(decoded):,} images of {width}x{height} from {source} would take "
            f"{needed / 2**30:,.1f} GiB decoded, more than half of this machine's "
            f"{memory / 2**30:,.1f} GiB"
        )

    arrays = {split: np.empty((0, channels, height, width), np.uint8) for split in SPLITS}
    labels = {}
    for split in SPLITS:
        chosen = [i for i, e in enumerate(entries) if e[0] == split]
        out = np.empty((len(chosen), height, width, channels), np.uint8)
        for row, i in enumerate(chosen):
            out[row] = _fitted(decoded[i], entries[i], mode, (width, height), channels)
            decoded[i] = None  # its pixels are in ``out`` now
        arrays[split] = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        labels[split] = np.asarray([class_index[entries[i][1]] for i in chosen], np.int64)
    return ImageDataset(
        arrays["train"],
        labels["train"],
        arrays["test"],
        labels["test"],
        classes,
        source=f"imagefolder:{source}",
        fingerprint=fingerprint,
    )


# (grayscale?, (width, height), pixels in mode L if grayscale, else RGB)
Decoded = tuple[bool, tuple[int, int], np.ndarray]
# Fewer images than this decode faster in this process than a pool of processes starts (~0.3 s).
PARALLEL_FROM = 4096


def _decode_all(items: list[tuple[str, bytes | Path]]) -> list[Decoded]:
    """Each image decoded, in order; by a pool of processes, one a core, when there are many
    (Pillow's per-image work is Python-bound, so threads would not help). The first bad image in
    order raises its DataError, as one process would."""
    cores = _cores()
    if len(items) < PARALLEL_FROM or cores is None:
        return _decode_chunk(items)
    size = math.ceil(len(items) / (4 * cores))  # a few chunks a process: they finish together
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with _pool(cores) as pool:
        return [image for chunk in pool.map(_decode_chunk, chunks) for image in chunk]


def _cores() -> int | None:
    """The cores a pool of decoding processes may use; None where no pool can help or start."""
    cores = usable_cores()
    alone = multiprocessing.current_process().daemon  # a daemonic process may have no children
    return None if (cores or 1) < 2 or alone else cores


def _pool(cores: int) -> ProcessPoolExecutor:
    spawn = multiprocessing.get_context("spawn")  # never fork a process that may run torch
    return ProcessPoolExecutor(cores, mp_context=spawn)


class Decoding:
    """Images decoded while an archive is still being read: once PARALLEL_FROM have come, they
    go in chunks to a pool of processes, so that reading (this process) and decoding (the pool)
    overlap. Fewer are decoded here at the end. The first bad image in archive order raises its
    DataError."""

    CHUNK = 1024  # images a task

    def __init__(self) -> None:
        self._waiting: list[tuple[str, bytes]] = []
        self._tasks: list[tuple[list[str], Future]] = []
        self._cores = _cores()
        self._executor: ProcessPoolExecutor | None = None
        self._seen = 0

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *_exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)

    def add(self, name: str, content: bytes) -> None:
        self._waiting.append((name, content))
        self._seen += 1
        if self._cores is not None and self._seen >= PARALLEL_FROM:
            while len(self._waiting) >= self.CHUNK:
                self._submit(self._waiting[: self.CHUNK])
                del self._waiting[: self.CHUNK]

    def _submit(self, items: list[tuple[str, bytes]]) -> None:
        if self._executor is None:
            self._executor = _pool(self._cores or 2)
        names = [name for name, _ in items]
        self._tasks.append((names, self._executor.submit(_decode_chunk, items)))

    def results(self) -> dict[str, list[Decoded]]:
        """Every image added, decoded, by name: a list, in the order added (a tar may hold one
        name twice)."""
        waiting, self._waiting = self._waiting, []
        if self._executor is None:  # too few for a pool: decoded here
            chunks = [([name for name, _ in waiting], _decode_chunk(waiting))]
        else:
            if waiting:
                self._submit(waiting)
            chunks = [(names, task.result()) for names, task in self._tasks]
        decoded: dict[str, list[Decoded]] = {}
        for names, images in chunks:
            for name, image in zip(names, images, strict=True):
                decoded.setdefault(name, []).append(image)
        return decoded


def _decode_chunk(items: list[tuple[str, bytes | Path]]) -> list[Decoded]:
    decoded = []
    with _bombs_refused():
        for name, content in items:
            image = _open(name, content)
            gray = image.mode in _GRAY_MODES
            own = "L" if gray else "RGB"
            pixels = np.asarray(image if image.mode == own else image.convert(own), np.uint8)
            decoded.append((gray, image.size, pixels))
            image.close()
    return decoded


def _fitted(
    decoded: Decoded, entry: Entry, mode: str, size: tuple[int, int], channels: int
) -> np.ndarray:
    """The image in the data set's mode and size (bilinear resize), as HxWxC."""
    gray, own_size, pixels = decoded
    if gray and mode == "RGB":  # a grayscale image among colour ones: converted from its source
        with _bombs_refused():
            image = _open(entry[2], entry[3])
        pixels = np.asarray(image.convert("RGB"), np.uint8)
        image.close()
    if own_size != size:
        resized = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, np.uint8)
    return pixels.reshape(size[1], size[0], channels)
