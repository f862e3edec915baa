import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnsweep.data import archives, cifar10, detect, imagefolder, load_data
from cnnsweep.data.device import DeviceImages, random_crop_flip
from cnnsweep.data.loading import ensure_cifar10
from cnnsweep.data.splits import split_indices
from cnnsweep.errors import ConfigError, DataError
from tests.conftest import (
    CIFAR_CLASSES,
    SHARED_ARCHIVE,
    add_member,
    png_header,
    tar_folder,
    write_cifar_archive,
    write_cifar_folder,
    write_image_folder,
)


def cache_entries(cache: Path) -> list[Path]:
    folder = cache / "datasets"
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


# --- source cifar10 (official python archive) -----------------------------------------------


def test_official_archive_and_its_extracted_folder_load_the_same(tmp_path):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=20, test=30)
    from_archive = load_data(archive)
    assert from_archive.train_images.shape == (100, 3, 32, 32)
    assert from_archive.test_images.shape == (30, 3, 32, 32)
    assert from_archive.classes == CIFAR_CLASSES
    assert from_archive.source.startswith("cifar10:")

    extracted = tmp_path / "extracted"
    cifar10.safe_extract(archive, extracted)
    for path in (extracted, extracted / "cifar-10-batches-py"):
        from_folder = load_data(path)
        np.testing.assert_array_equal(from_folder.train_images, from_archive.train_images)
        np.testing.assert_array_equal(from_folder.test_labels, from_archive.test_labels)
    # pixel layout: row-major 3x32x32 per image, as in the official batches
    first = pickle.loads((extracted / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(from_archive.train_images[0].reshape(-1), first[b"data"][0])


def test_second_load_comes_from_the_cache(tmp_path, private_cache):
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    first = load_data(folder)
    assert len(cache_entries(private_cache)) == 1 and not first.from_cache
    # Garbage of the same size and modification time: the fingerprint cannot tell, so a second
    # load that decoded again would fail; one from the cache does not.
    batch = folder / "data_batch_1"
    stat = batch.stat()
    batch.write_bytes(b"\0" * stat.st_size)
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hit = load_data(folder)
    assert hit.from_cache
    np.testing.assert_array_equal(hit.train_images, first.train_images)
    # Mapped from the cache, read-only: workers share the pages rather than each copy them.
    arrays = (hit.train_images, hit.train_labels, hit.test_images, hit.test_labels)
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in arrays)
    os.remove(batch)  # if the cache were bypassed, loading would now fail
    with pytest.raises(DataError):
        load_data(folder)  # the source changed, so its fingerprint did: no stale reuse
    write_cifar_folder(folder)
    again = load_data(folder)
    np.testing.assert_array_equal(again.train_images, first.train_images)


def test_read_only_arrays_reach_torch_as_writable_copies():
    """The decode cache's arrays are read-only memory maps: a split made of one whole (the
    official test set) is copied for torch, without its warning that writing would be undefined,
    and nothing done to the tensor reaches the array."""
    import warnings

    images = np.zeros((4, 3, 8, 8), np.uint8)
    labels = np.arange(4, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it is given a read-only array
        split = DeviceImages(images, labels, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    split.images += 1
    split.labels.zero_()
    assert images.max() == 0 and labels.tolist() == [0, 1, 2, 3]
    writable = np.zeros((2, 3, 8, 8), np.uint8)  # a writable array is shared, not copied
    shared = DeviceImages(writable, labels[:2].copy(), torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    assert shared.images.data_ptr() == writable.ctypes.data


def test_a_cache_that_cannot_be_written_is_said_and_the_data_still_loads(
    tmp_path, monkeypatch, caplog
):
    """$CNNSWEEP_CACHE naming a file: the data loads (decoded), a line says that the cache
    cannot be written, and the file is left as it was."""
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_bytes(b"mine")
    monkeypatch.setenv("CNNSWEEP_CACHE", str(not_a_folder))
    assert not load_data(folder).from_cache
    (said,) = [r.getMessage() for r in caplog.records if "decode cache" in r.getMessage()]
    assert said.startswith(f"cnnsweep: cannot write the decode cache in {not_a_folder}/"), said
    assert not_a_folder.read_bytes() == b"mine"


@pytest.mark.parametrize("damage", ["empty-meta", "truncated-array", "missing-array"])
def test_a_damaged_cache_entry_is_decoded_again_and_replaced(tmp_path, private_cache, damage):
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    first = load_data(folder)
    (entry,) = cache_entries(private_cache)
    sound = {p.name: p.read_bytes() for p in entry.iterdir()}
    if damage == "empty-meta":
        (entry / "meta.json").write_text("{}")
    elif damage == "truncated-array":
        array = entry / "train_images.npy"
        array.write_bytes(array.read_bytes()[:1000])
    else:
        (entry / "test_labels.npy").unlink()
    again = load_data(folder)
    np.testing.assert_array_equal(again.train_images, first.train_images)
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == sound  # replaced, whole
    assert load_data(folder).from_cache
    assert [p.name for p in (private_cache / "datasets").iterdir()] == [entry.name]  # no litter


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines on stderr
        pass


def serve(folder: Path):
    handler = partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_verifies_md5_extracts_and_is_reused(tmp_path, private_cache, monkeypatch):
    archive = write_cifar_archive(tmp_path / "www" / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    server = serve(archive.parent)
    url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    try:
        folder = ensure_cifar10(url=url, md5=md5, progress=False)
        assert (folder / "data_batch_5").is_file()
        server.shutdown()  # the second call must not need the network
        assert ensure_cifar10(url=url, md5=md5, progress=False) == folder
    finally:
        server.server_close()
    monkeypatch.setattr(cifar10, "URL", url)
    assert load_data(None).train_images.shape[0] == 100


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, private_cache):
    archive = write_cifar_archive(tmp_path / "www" / "cifar-10-python.tar.gz")
    server = serve(archive.parent)
    url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    try:
        with pytest.raises(DataError, match=r"checksum mismatch.*expected c58f30108f"):
            ensure_cifar10(url=url, md5=cifar10.MD5, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    # Neither the bad archive nor a temporary file, nor the folder made for them.
    assert not (private_cache / "cifar10").exists()
    assert cache_entries(private_cache) == []


def test_a_wrong_checksum_through_the_cli_is_one_line_and_keeps_nothing(
    tmp_path, private_cache, monkeypatch, capsys
):
    from cnnsweep.cli import main
    from tests.test_hostile import snapshot

    archive = write_cifar_archive(tmp_path / "www" / "cifar-10-python.tar.gz")
    server = serve(archive.parent)
    mirror = f"http://127.0.0.1:{server.server_port}/{archive.name}"
    monkeypatch.setenv("CNNSWEEP_CIFAR10_URL", mirror)  # a mirror serving another file
    before = snapshot(private_cache)
    try:
        assert main(["data"]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err  # the download's progress bar, then one error line
    last = err.rstrip("\n").splitlines()[-1].split("\r")[-1]
    assert err.count("cnnsweep: error: ") == 1 and last.startswith("cnnsweep: error: ")
    assert "checksum mismatch" in last and "expected c58f30108f" in last
    assert snapshot(private_cache) == before  # no archive, no extraction, no cache entry


def test_unreachable_download_is_a_one_line_error(private_cache):
    with pytest.raises(DataError, match=r"cannot download http://127.0.0.1:9/"):
        ensure_cifar10(url="http://127.0.0.1:9/cifar.tar.gz", progress=False)


def test_extraction_refuses_path_traversal(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "cifar-10-batches-py/../../escaped.txt", b"gotcha")
    with pytest.raises(DataError, match="unsafe path"):
        cifar10.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DataError, match=r"corrupt CIFAR-10 batch file data_batch_2.*forbidden"):
        load_data(folder)
    assert not (tmp_path / "pwned").exists()


# --- source imagefolder ---------------------------------------------------------------------


def test_grayscale_image_folder_and_its_tar_archive(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "digits", train_per_class=3, test_per_class=2, classes=4)
    data = load_data(root)
    assert data.train_images.shape == (12, 1, 28, 28)
    assert data.test_images.shape == (8, 1, 28, 28)
    assert data.classes == ("class0", "class1", "class2", "class3")
    assert list(data.train_labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    pixels = np.asarray(Image.open(root / "train" / "class1" / "0002.png"))
    np.testing.assert_array_equal(data.train_images[5, 0], pixels)

    archive = tar_folder(root, tmp_path / "digits.tar.gz")
    opened = []  # an archive is read in one pass: what it holds, and its images
    monkeypatch.setattr(archives, "_opened", partial(counted, archives._opened, opened))
    packed = load_data(archive)
    np.testing.assert_array_equal(packed.train_images, data.train_images)
    assert packed.classes == data.classes
    assert opened == [(archive,)]


def counted(function, calls: list, *args, **kwargs):
    calls.append(args)
    return function(*args, **kwargs)


def test_mixed_sizes_and_modes_become_one_rgb_array(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "train" / "a" / "1.jpg")
    Image.new("RGB", (20, 20), (0, 255, 0)).save(tmp_path / "train" / "b" / "1.png")
    Image.new("L", (40, 30), 128).save(tmp_path / "test" / "a" / "1.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "test" / "b" / "1.png")
    data = load_data(tmp_path)
    assert data.train_images.shape == (2, 3, 20, 20)  # most common size wins
    assert data.test_images.shape == (2, 3, 20, 20)
    assert tuple(data.test_images[0, :, 5, 5]) == (128, 128, 128)


def test_an_archive_s_images_decode_while_it_is_read(tmp_path, monkeypatch):
    """From an archive, chunks of images go to the pool as they are read (Decoding): the same
    arrays as a folder decoded by one process; a bad image is named, the pool shut down."""
    root = write_image_folder(tmp_path / "d", train_per_class=4, test_per_class=2, classes=3)
    Image.new("RGB", (28, 28), (10, 200, 30)).save(root / "train" / "class0" / "rgb.png")
    one = load_data(root, use_cache=False)
    monkeypatch.setattr(imagefolder, "PARALLEL_FROM", 4)
    monkeypatch.setattr(imagefolder.Decoding, "CHUNK", 3)
    submitted = []
    real_submit = imagefolder.Decoding._submit

    def submit(self, items) -> None:
        submitted.append(len(items))
        real_submit(self, items)

    monkeypatch.setattr(imagefolder.Decoding, "_submit", submit)
    streamed = load_data(tar_folder(root, tmp_path / "d.tar.gz"), use_cache=False)
    assert len(submitted) > 2 or len(os.sched_getaffinity(0)) < 2  # in chunks, while reading
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(one, name))
    # One name twice in a tar (each is an image of its own, in archive order).
    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w") as tar:
        tar.add(root, arcname=root.name)
        for colour in (40, 240):
            blob = io.BytesIO()
            Image.new("L", (28, 28), colour).save(blob, "PNG")
            add_member(tar, "d/train/class2/dup.png", blob.getvalue())
    doubled = load_data(twice, use_cache=False)
    assert len(doubled.train_labels) == len(one.train_labels) + 2
    colours = [int(doubled.train_images[i, 0, 0, 0]) for i in np.flatnonzero(
        doubled.train_labels == 2)][-2:]  # fmt: skip
    assert colours == [40, 240]
    (root / "train" / "class1" / "0001.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"corrupt image .*class1/0001\.png"):
        load_data(tar_folder(root, tmp_path / "bad.tar.gz"), use_cache=False)


def test_a_pool_of_processes_decodes_what_one_process_does(tmp_path, monkeypatch):
    """Many images are decoded by a pool of processes: the same arrays, in the same order, as
    one process gives, mixed modes and sizes included; the first bad image is named."""
    root = write_image_folder(tmp_path / "d", train_per_class=4, test_per_class=2, classes=3)
    Image.new("RGB", (28, 28), (10, 200, 30)).save(root / "train" / "class0" / "rgb.png")
    Image.new("L", (40, 30), 77).save(root / "test" / "class2" / "big.png")
    one = load_data(root, use_cache=False)
    monkeypatch.setattr(imagefolder, "PARALLEL_FROM", 2)
    pools = []

    class Pool(imagefolder.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "ProcessPoolExecutor", Pool)
    pooled = load_data(root, use_cache=False)
    allowed = os.sched_getaffinity(0)
    assert [size for size, *_ in pools] == ([len(allowed)] if len(allowed) >= 2 else [])
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(pooled, name), getattr(one, name))
    assert tuple(pooled.train_images[4, :, 0, 0]) == (10, 200, 30)  # class0's fifth: rgb.png
    (root / "train" / "class1" / "0001.png").write_bytes(b"not an image")
    (root / "train" / "class2" / "0003.png").write_bytes(b"nor this")
    with pytest.raises(DataError, match=r"corrupt image .*class1/0001\.png"):
        load_data(root, use_cache=False)


def test_the_decoding_pool_has_a_process_per_cpu_this_process_may_use():
    """Held to one CPU (taskset, a container's cpuset), decoding stays in this process: a pool
    would only take turns on that CPU."""
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert imagefolder._cores() is None
    finally:
        os.sched_setaffinity(0, allowed)
    assert imagefolder._cores() == (len(allowed) if len(allowed) >= 2 else None)


def test_real_cifar10_jpeg_loads_and_a_second_load_is_fast(real_cifar, session_cache, monkeypatch):
    monkeypatch.setenv("CNNSWEEP_CACHE", str(session_cache))
    assert real_cifar.train_images.shape == (50000, 3, 32, 32)
    assert real_cifar.test_images.shape == (10000, 3, 32, 32)
    assert real_cifar.classes == CIFAR_CLASSES
    assert np.bincount(real_cifar.train_labels).tolist() == [5000] * 10
    mean = real_cifar.train_images.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=2e-4)  # the archive's README
    start = time.perf_counter()
    again = load_data(SHARED_ARCHIVE)
    assert time.perf_counter() - start <= 2.0
    np.testing.assert_array_equal(again.test_labels, real_cifar.test_labels)


# --- bad input: one-line DataError naming the problem; nothing cached -------------------------


def test_missing_path(tmp_path, private_cache):
    with pytest.raises(DataError, match=r"data path does not exist: .*nowhere"):
        load_data(tmp_path / "nowhere")


def test_folder_without_class_folders(tmp_path, private_cache):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no train/ and test/ class folders"):
        load_data(tmp_path / "photos")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(DataError, match=r"no class folders with images under .*train"):
        load_data(tmp_path / "empty")
    assert cache_entries(private_cache) == []


def test_train_and_test_with_different_classes(tmp_path, private_cache):
    root = write_image_folder(tmp_path / "d", train_per_class=1, test_per_class=1, classes=3)
    (root / "test" / "class2").rename(root / "test" / "extra")
    with pytest.raises(DataError, match=r"different classes.*\['class2'\].*\['extra'\]"):
        load_data(root)
    assert cache_entries(private_cache) == []


def test_corrupt_image_is_named(tmp_path, private_cache):
    root = write_image_folder(tmp_path / "d", train_per_class=2, test_per_class=1, classes=2)
    bad = root / "train" / "class1" / "0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=r"corrupt image .*class1/0001\.png"):
        load_data(root)
    assert cache_entries(private_cache) == []


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_an_image_past_pillows_bomb_limits_is_refused(side, tmp_path, private_cache):
    """10,000 x 10,000 pixels is past Pillow's warning limit (89.5 million pixels; a warning
    only, were it not made an error), 20,000 x 20,000 past its error limit: both are refused,
    and the images decoded beside them are cached nowhere."""
    root = write_image_folder(tmp_path / "d", train_per_class=2, test_per_class=1, classes=2)
    (root / "train" / "class1" / "huge.png").write_bytes(png_header(side, side))
    with pytest.raises(DataError, match=r"image too large .*class1/huge\.png"):
        load_data(root)
    assert cache_entries(private_cache) == []


def test_a_file_that_is_no_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a folder or a tar archive"):
        load_data(tmp_path / "notes.txt")


# --- splits and device batches ------------------------------------------------------------------


def test_splits_are_seeded_disjoint_and_cut_like_the_report():
    a_train, a_rest = split_indices(50000, 0.7, seed=3)
    b_train, _ = split_indices(50000, 0.7, seed=3)
    c_train, _ = split_indices(50000, 0.7, seed=4)
    assert len(a_train) == 35000 and len(a_rest) == 15000
    assert np.array_equal(a_train, b_train) and not np.array_equal(a_train, c_train)
    assert not set(a_train) & set(a_rest)
    assert len(split_indices(1001, 0.9, 0)[0]) == int(1001 * 0.9)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="split fraction"):
            split_indices(100, bad, 0)


def test_epoch_batches_visit_every_image_once_in_a_seeded_order():
    images = np.arange(10 * 3 * 4 * 4, dtype=np.uint8).reshape(10, 3, 4, 4)
    labels = np.arange(10)
    data = DeviceImages(images, labels, torch.device("cpu"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        batches = list(data.epoch_batches(4, gen, augment="none"))
        assert [len(y) for _, y in batches] == [4, 4, 2]
        assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)
        return torch.cat([y for _, y in batches]).tolist()

    assert sorted(order(0)) == list(range(10))
    assert order(0) == order(0) and order(0) != order(1)
    x, _ = next(data.eval_batches(100))
    expected = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)


def test_random_crop_flip_is_a_shift_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flipped, offsets = 0, set()
    for i in range(len(images)):
        candidates = {
            (dy, dx, f): crop.flip(-1) if f else crop
            for dy in range(9)
            for dx in range(9)
            for crop in [padded[i, :, dy : dy + 8, dx : dx + 8]]
            for f in (0, 1)
        }
        matches = [k for k, crop in candidates.items() if torch.equal(crop, out[i])]
        assert matches, f"image {i} is not a padded crop"
        flipped += all(k[2] for k in matches)
        if len({k[:2] for k in matches}) == 1:
            offsets.add(matches[0][:2])
    assert 10 < flipped < 54  # about half flipped
    # Crops, not only flips: 64 images drawn from 81 offsets show many of them, shifted ones too.
    assert len(offsets) >= 25 and len(offsets - {(4, 4)}) >= 24
    assert not torch.equal(out, images)


@pytest.mark.parametrize(("count", "folds"), [(100, 5), (103, 4), (10, 10)])
def test_kfold_validation_parts_are_disjoint_and_cover_the_training_images(count, folds):
    from cnnsweep.data.splits import fold_indices

    seen = []
    for fold in range(folds):
        train, val = fold_indices(count, folds, fold, seed=3)
        assert not set(train) & set(val) and len(train) + len(val) == count
        assert abs(len(val) - count / folds) < 1
        seen.extend(val)
    assert sorted(seen) == list(range(count))  # every image validates exactly once
    assert not np.array_equal(
        fold_indices(count, folds, 0, 3)[1], fold_indices(count, folds, 0, 4)[1]
    )


def test_flip_only_augmentation_flips_about_half_and_never_shifts():
    from cnnsweep.data.device import random_flip

    images = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_flip(images.clone(), torch.Generator().manual_seed(1))
    pairs = list(zip(out, images, strict=True))
    flipped = [torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in pairs]
    kept = [torch.equal(o, i) for o, i in pairs]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_unknown_augmentation_is_named():
    from cnnsweep.config import make_config

    with pytest.raises(ConfigError, match="unknown augmentation 'rotate'; valid: none, flip"):
        make_config(augment="rotate")
    assert make_config(augment="crop+flip").augment is True  # the same run as augment = true
    assert make_config(augment="none").augment is False
    assert make_config(augment="flip").augmentation == "flip"


def test_detect_names_each_kind_of_source_and_its_root(tmp_path):
    """``cnnsweep.data.detect``: the kind of source a path holds and where it is read from, for
    each layout load_data accepts; a tar archive is read to its end and verified."""
    cifar = write_cifar_folder(tmp_path / "c" / "cifar-10-batches-py", per_batch=2, test=2)
    images = write_image_folder(tmp_path / "i" / "pics", train_per_class=1, test_per_class=1,
                                classes=2)  # fmt: skip
    assert detect(cifar) == ("cifar10-dir", cifar)
    assert detect(cifar.parent) == ("cifar10-dir", cifar)  # the folder the archive unpacks into
    assert detect(images) == ("imagefolder-dir", images)
    archive = write_cifar_archive(tmp_path / "a" / "cifar-10-python.tar.gz", per_batch=2, test=2)
    assert detect(archive) == ("cifar10-archive", archive)
    packed = tar_folder(images, tmp_path / "pics.tar.gz")
    assert detect(packed) == ("imagefolder-archive", packed)
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        add_member(tar, "notes/readme.txt", b"hello")
    with pytest.raises(DataError, match="holds neither CIFAR-10 batches nor train/ and test/"):
        detect(tmp_path / "other.tar")
    (tmp_path / "cut.tar.gz").write_bytes(packed.read_bytes()[:-40])  # its gzip trailer cut
    with pytest.raises(DataError, match=r"corrupt .*cut\.tar\.gz"):
        detect(tmp_path / "cut.tar.gz")
