"""``load_data(path)``: detect what a data path is, decode it once, and reuse the cache after that.

Accepted: the official ``cifar-10-python.tar.gz`` or its extracted folder; a class-folder tree
(``train/<class>/*``, ``test/<class>/*``) as a folder or a tar archive. With no path, CIFAR-10 is
downloaded once into the cache folder and reused.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from cnnsweep.data import archives, cache, cifar10, imagefolder
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.errors import DataError


def load_data(
    path: str | Path | None = None,
    *,
    use_cache: bool = True,
    save_cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load a data set; a second load of the same unchanged source comes from the cache.

    ``save_cache=False`` leaves the caching to the caller (``cache.save_cached``), for callers that
    check more before anything is written (``cnnsweep train``: does the model fit the images?).
    """
    if path is None:
        path = ensure_cifar10(progress=progress)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data path does not exist: {path}")
    if not (path.is_dir() or path.is_file()):  # a device, a FIFO or a socket: never read
        raise DataError(f"data path is not a regular file or a folder: {path}")
    kind, root = _locate(path)
    fingerprint = cache.fingerprint_files(kind, root, _source_files(kind, root))
    if use_cache and (cached := cache.load_cached(fingerprint)) is not None:
        return cached

    if kind == "archive":
        dataset = _read_archive(root, fingerprint)
    elif kind == "cifar10-dir":
        dataset = cifar10.read_folder(root, fingerprint)
    else:
        dataset = imagefolder.decode(imagefolder.folder_entries(root), str(root), fingerprint)
    if use_cache and save_cache:
        cache.save_cached(dataset)  # only after the whole source decoded without error
    return dataset


def detect(path: Path) -> tuple[str, Path]:
    """Return (kind, root): which source ``path`` holds and the folder or file to read."""
    kind, root = _locate(path)
    return (_archive_kind(root), root) if kind == "archive" else (kind, root)


def _source_files(kind: str, root: Path) -> list[Path]:
    if kind == "imagefolder-dir":
        return imagefolder.folder_files(root)
    if kind == "cifar10-dir":
        names = (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, cifar10.META_FILE)
        return [root / n for n in names if (root / n).exists()]
    return [root]


def _locate(path: Path) -> tuple[str, Path]:
    """Cheap detection: folders are inspected; a file is only checked to be a tar archive."""
    if path.is_dir():
        for candidate in (path, path / cifar10.FOLDER_NAME):
            if (candidate / cifar10.TRAIN_BATCHES[0]).is_file():
                return "cifar10-dir", candidate
        root = imagefolder.find_root(path)
        if root is not None:
            return "imagefolder-dir", root
        raise DataError(f"no train/ and test/ class folders, nor CIFAR-10 batch files, in {path}")
    if not tarfile.is_tarfile(path):
        raise DataError(f"not a folder or a tar archive: {path}")
    return "archive", path


def _read_archive(archive: Path, fingerprint: str) -> ImageDataset:
    """CIFAR-10's batches, or else class-folder images, from one pass over the archive (each pass
    over a large .tar.xz takes seconds); nothing is extracted, so no path can escape."""
    if archive.name == cifar10.ARCHIVE_NAME and archive.stat().st_size == cifar10.ARCHIVE_SIZE:
        cifar10.verify_md5(archive, cifar10.MD5)  # it claims to be the official archive
    names: list[str] = []
    batches, images = [], []
    wanted = lambda m: cifar10.is_batch_member(m) or imagefolder.is_image_member(m)  # noqa: E731
    with imagefolder.Decoding() as decoding:  # images decode while the rest is read
        for member, content in archives.read_members(
            archive, wanted, every=lambda m: names.append(m.name)
        ):
            if cifar10.is_batch_member(member):
                batches.append((member, content))
            else:
                images.append((member, content))
                decoding.add(imagefolder.entry_name(archive, member), content)
        if _kind_of(names, archive) == "cifar10-archive":
            return cifar10.from_members(batches, archive, fingerprint)
        entries = imagefolder.member_entries(images, archive)
        return imagefolder.decode(entries, str(archive), fingerprint, decoding.results())


def _archive_kind(path: Path) -> str:
    return _kind_of(archives.member_names(path), path)


def _kind_of(names: list[str], path: Path) -> str:
    """Which source an archive holding members ``names`` is."""
    parts = [archives.name_parts(n) for n in names]
    if any(p[-1:] == [cifar10.TRAIN_BATCHES[0]] for p in parts):
        return "cifar10-archive"
    if any(set(p) & set(imagefolder.SPLITS) for p in parts):
        return "imagefolder-archive"
    raise DataError(f"archive {path} holds neither CIFAR-10 batches nor train/ and test/ folders")


MIRROR_VARIABLE = "CNNSWEEP_CIFAR10_URL"  # a mirror of the official archive (same MD5)


def cifar10_is_cached() -> bool:
    """Whether the official CIFAR-10 is already in the cache (ensure_cifar10 needs no download)."""
    return (cache.cache_root() / "cifar10" / cifar10.FOLDER_NAME / cifar10.TEST_BATCH).is_file()


def ensure_cifar10(*, url: str | None = None, md5: str = cifar10.MD5, progress=True) -> Path:
    """The extracted official CIFAR-10 in the cache; downloaded and extracted the first time,
    from ``url``, else $CNNSWEEP_CIFAR10_URL (a mirror), else the official address. Whatever
    the address, the archive must have the official MD5."""
    url = url or os.environ.get(MIRROR_VARIABLE) or cifar10.URL
    home = cache.cache_root() / "cifar10"
    folder = home / cifar10.FOLDER_NAME
    if cifar10_is_cached():
        return folder
    archive = home / cifar10.ARCHIVE_NAME
    created = not home.exists()
    try:
        if not archive.is_file():
            cifar10.download(url, archive, md5, progress=progress)
        else:
            cifar10.verify_md5(archive, md5)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=home))
        try:  # extracted aside, then renamed: a half-extracted folder is never taken as whole
            cifar10.safe_extract(archive, staging)
            os.replace(staging / cifar10.FOLDER_NAME, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if created:  # a failed first download leaves no trace
            shutil.rmtree(home, ignore_errors=True)
        raise
    return folder
