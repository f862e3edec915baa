"""Source ``imagefolder``: ``train/<class>/*`` and ``test/<class>/*`` images, in a folder or a tar.

Images may be JPEG or PNG, of any size, grayscale or colour. The data set takes 1 channel when
every image is grayscale and 3 otherwise; images whose size differs from the most common one are
resized to it (bilinear), so that the whole set is one array.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnsweep.data.dataset import ImageDataset
from cnnsweep.errors import DataError

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
    parts = PurePosixPath(member.name).parts
    if len(parts) < 3:
        return False
    split, _, filename = parts[-3:]
    return split in SPLITS and PurePosixPath(filename).suffix.lower() in IMAGE_SUFFIXES


def member_entries(members: list[tuple[tarfile.TarInfo, bytes]], archive: Path) -> list[Entry]:
    """Image members laid out as ``[prefix/]train|test/<class>/<file>`` (is_image_member), as
    read from the archive (read_members: in one pass, verified to the archive's end)."""
    entries: list[Entry] = []
    for member, blob in members:
        split, class_name, _ = PurePosixPath(member.name).parts[-3:]
        entries.append((split, class_name, f"{archive}:{member.name}", blob))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return entries


def _open(name: str, content: bytes | Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; both are refused
            # here: such an image is a decompression bomb, or at least no training image.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
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


def decode(entries: list[Entry], source: str, fingerprint: str) -> ImageDataset:
    """Decode every image (one pass to open, one to convert) into uint8 NCHW arrays."""
    classes = _classes(entries, source)
    class_index = {name: i for i, name in enumerate(classes)}
    images = [_open(name, content) for _, _, name, content in entries]
    grayscale = all(im.mode in _GRAY_MODES for im in images)
    mode, channels = ("L", 1) if grayscale else ("RGB", 3)
    width, height = Counter(im.size for im in images).most_common(1)[0][0]
    needed = len(images) * channels * width * height  # bytes of the uint8 arrays
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory // 2:
        raise DataError(
            f"{len(images):,} images of {width}x{height} from {source} would take "
            f"{needed / 2**30:,.1f} GiB decoded, more than half of this machine's "
            f"{memory / 2**30:,.1f} GiB"
        )

    arrays = {split: np.empty((0, channels, height, width), np.uint8) for split in SPLITS}
    labels = {}
    for split in SPLITS:
        chosen = [i for i, e in enumerate(entries) if e[0] == split]
        out = np.empty((len(chosen), height, width, channels), np.uint8)
        for row, i in enumerate(chosen):
            out[row] = _to_array(images[i], mode, (width, height), channels)
            images[i].close()
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


def _to_array(image: Image.Image, mode: str, size: tuple[int, int], channels: int) -> np.ndarray:
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(size[1], size[0], channels)
