"""Shared fixtures. Every test gets a private decode cache, so nothing touches ~/.cache."""

from __future__ import annotations

import gc
import io
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


# The real data set's decode (13 s on 2 AVX2 cores, most of it in a pool of processes) starts
# in a process of its own as the session starts, beside the collection's imports (about 9 s on
# one core), and fills the session's decode cache: the first test that needs it waits for the
# rest, then loads the cache. The decode is the one the tests would make, only sooner.
REAL_DECODE = pytest.StashKey[tuple[subprocess.Popen, Path]]()


def pytest_configure(config) -> None:
    if SHARED_ARCHIVE.is_file():
        cache = Path(tempfile.mkdtemp(prefix="cnnsweep-session-cache-"))
        code = "import sys\nfrom cnnsweep.data import load_data\nload_data(sys.argv[1])"
        decode = subprocess.Popen(
            [sys.executable, "-c", code, str(SHARED_ARCHIVE)], cwd=REPO,
            env={**os.environ, "CNNSWEEP_CACHE": str(cache)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # an error: repeated in the test
        )  # fmt: skip
        config.stash[REAL_DECODE] = (decode, cache)


def pytest_unconfigure(config) -> None:
    if REAL_DECODE in config.stash:
        decode, cache = config.stash[REAL_DECODE]
        if decode.poll() is None:
            decode.kill()
        decode.wait()
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(items: list) -> None:
    """The benchmarks last (in their file's order; the others as collected): they need the real
    data first thing, whose decode then finishes while the other tests run rather than while
    the first benchmark waits for it (5 s of the suite, idle), and they measure on a machine no
    longer busy with it."""
    items.sort(key=lambda item: item.path.name == "test_bench.py")


def pytest_collection_finish(session) -> None:
    """Once the test modules are imported (torch, pandas, Optuna, SQLAlchemy: millions of
    objects that live as long as the session), move them out of the garbage collector's sight,
    as gc's documentation advises for long-lived objects: its full collections otherwise walk
    them all again and again. Measured on the 2-core AVX2-only CPU, over the store, report and
    runner tests: the collector's time 16.1 s -> 7.2 s (the wall time's gain was within that
    machine's drift from hour to hour)."""
    gc.collect()
    gc.freeze()
    needed = any("real_cifar" in getattr(item, "fixturenames", ()) for item in session.items)
    if not needed and REAL_DECODE in session.config.stash:  # no test here uses the real data
        session.config.stash[REAL_DECODE][0].kill()


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CNNSWEEP_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def torch_threads_kept() -> Iterator[None]:
    """Torch's CPU threads in this process, as they were before the test. A benchmark's main()
    run here sets them to a worker's share (bench/preset_trade.py: 1) for the rest of its
    process: every later test that trained in this process then trained on one core of two."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """A Ctrl-C (SIGINT) to this process raises KeyboardInterrupt during the test, as at a
    terminal. A suite started in the background of a script inherits SIGINT ignored, and Python
    then installs no handler for it: a test's own Ctrl-C would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def session_cache(pytestconfig, tmp_path_factory) -> Path:
    """The cache that holds the real data set, decoded once for the whole session."""
    if REAL_DECODE in pytestconfig.stash:
        return pytestconfig.stash[REAL_DECODE][1]
    return tmp_path_factory.mktemp("session-cache")


@pytest.fixture(scope="session")
def real_cifar(pytestconfig, session_cache):
    """The real CIFAR-10 (JPEG) from the shared archive, decoded once per test session (by the
    process pytest_configure started; were it to fail, the load here says why)."""
    if REAL_DECODE in pytestconfig.stash:
        pytestconfig.stash[REAL_DECODE][0].wait()
    if not SHARED_ARCHIVE.is_file():
        message = f"shared data archive not found at {SHARED_ARCHIVE}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared: a skip there would hide a problem
        pytest.skip(message)
    from cnnsweep.data import load_data

    mp = pytest.MonkeyPatch()
    mp.setenv("CNNSWEEP_CACHE", str(session_cache))
    try:
        return load_data(SHARED_ARCHIVE, progress=False)
    finally:
        mp.undo()


# --- writers for small data sets in the official formats -----------------------------------


def cifar_batch(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    labels = [int(i % 10) for i in range(count)]
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    return data, labels


def write_cifar_folder(folder: Path, per_batch: int = 20, test: int = 20) -> Path:
    """A ``cifar-10-batches-py`` folder in the official pickle format (numpy array data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        data, labels = cifar_batch(per_batch, seed=i)
        blob = {b"batch_label": b"training batch", b"labels": labels, b"data": data}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(blob, protocol=2))
    data, labels = cifar_batch(test, seed=99)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": labels, b"data": data}))
    meta = {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def write_cifar_archive(path: Path, **kwargs) -> Path:
    """``cifar-10-python.tar.gz`` layout: one top folder ``cifar-10-batches-py``."""
    folder = write_cifar_folder(path.parent / "_src" / "cifar-10-batches-py", **kwargs)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


def pattern_image(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A learnable grayscale picture: a bright bar whose position and orientation name the class."""
    image = rng.normal(60, 25, (size, size))
    offset = 3 + 4 * (label % 5) + int(rng.integers(-1, 2))
    if label < 5:
        image[offset : offset + 3, 2:-2] += 150
    else:
        image[2:-2, offset : offset + 3] += 150
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(
    root: Path, train_per_class: int, test_per_class: int, classes: int = 10, size: int = 28
) -> Path:
    """``train/<class>/*.png`` and ``test/<class>/*.png`` grayscale images the test controls."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(pattern_image(label, rng, size), "L").save(folder / f"{i:04d}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a huge size (a decompression bomb's header), with no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def add_member(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


# --- services and small studies ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for this test session (see tests/postgres.py)."""
    from tests.postgres import PostgresServer, server_bin

    if server_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server programs not found")
        pytest.skip("PostgreSQL server programs not found")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres, request) -> str:
    """A fresh database on the session's server, one per test, with Optuna's tables and no
    study (a copy of one Optuna made them in)."""
    return postgres.create_database(_database_name(request), postgres.optuna_template())


@pytest.fixture
def empty_postgres_url(postgres, request) -> str:
    """A fresh database without even Optuna's tables (a mistyped name on the right server)."""
    return postgres.create_database(_database_name(request))


def _database_name(request) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:].lower()


@pytest.fixture(scope="session")
def bars_folder(tmp_path_factory) -> Path:
    """A small learnable grayscale class-folder data set, written once per session."""
    return write_image_folder(tmp_path_factory.mktemp("bars") / "bars", 40, 10)


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY_STUDY = """
name = "{name}"
protocol = "holdout"
seeds = {seeds}
data = "{data}"

[fixed]
width = 0.0625
max_epochs = {epochs}
patience = 10
eval_batch_size = 256
train_eval_images = 0  # no eval-mode pass over the training images: a tenth of each run's time

[grid]
optimizer = ["adam", "sgd"]
lr = {{ by = "optimizer", adam = [0.001], sgd = [0.05] }}
regularization = [{{ batch_norm = true }}, {{ dropout = true }}]
"""


@pytest.fixture
def tiny_spec(tmp_path, bars_folder):
    """Writes TINY_STUDY (4 runs per seed; 3 seeds, 12 runs, unless told) under a name, with a
    number of epochs per run."""

    def make(name: str = "tiny", epochs: int = 2, seeds: int = 3):
        text = TINY_STUDY.format(name=name, data=bars_folder, epochs=epochs, seeds=seeds)
        return write_spec(tmp_path / f"{name}.toml", text)

    return make


# --- journals ----------------------------------------------------------------------------------


def torn_files(journal: Path) -> list[Path]:
    return sorted(journal.parent.glob(journal.name + ".torn-*"))


def cut_last_line(journal: Path, keep: int = 25) -> bytes:
    """Cut the journal inside its last line, as a writer killed mid-append would leave it."""
    blob = journal.read_bytes()
    start = blob.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(blob[: start + keep])
    return blob[start : start + keep]
