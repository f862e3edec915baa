"""Hostile input against every command: each case must end with exit status 2 and one line
``cnnsweep: error: …`` that names the problem, no traceback, and nothing written or changed —
the study store, the data, the specs and the decode cache are compared byte for byte.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cnnsweep.cli import main
from tests.conftest import png_header, write_cifar_folder, write_image_folder

FIXTURE_JOURNAL = Path(__file__).parent / "fixtures" / "store-0.1.0" / "journal.log"
FIXTURE_SPEC = Path(__file__).parent / "fixtures" / "store-0.1.0" / "upgrade.toml"


@dataclass
class Place:
    """A working folder with a finished study, data sets and a warm decode cache."""

    root: Path
    cache: Path
    written: list[Path] = field(default_factory=list)  # the specs a case wrote, removed after it

    @property
    def bars(self) -> Path:
        return self.root / "bars"

    @property
    def journal(self) -> Path:
        return self.root / "runs" / "upgrade-tiny" / "journal.log"

    def spec(self, text: str, name: str = "hostile.toml") -> str:
        path = self.root / name
        path.write_text(text)
        self.written.append(path)
        return str(path)

    def search_spec(self, space: str, options: str = "", trials: int = 2, grid=False) -> str:
        """A small spec with a [search] of ``space`` and ``options`` (and a grid, if asked)."""
        axes = '[grid]\noptimizer = ["adam"]\n' if grid else ""
        return self.spec(f'name = "h"\ndata = "bars"\n[fixed]\nwidth = 0.0625\n{axes}'
                         f"[search]\ntrials = {trials}\n{options}\n{space}\n")  # fmt: skip

    def study_spec(self, extra: str = "", grid: str = 'optimizer = ["adam"]') -> str:
        """A small valid spec with ``extra`` top-level keys and ``grid`` axes."""
        return self.spec(f'name = "h"\ndata = "bars"\n{extra}\n[fixed]\nwidth = 0.0625\n'
                         f"max_epochs = 1\n[grid]\n{grid}\n")  # fmt: skip


def snapshot(*roots: Path) -> dict[str, object]:
    """Every file under ``roots`` with its bytes (others by kind), so any change is seen. By
    os.scandir, whose entries carry their kind: Path.rglob and a stat per test took 9 s of the
    suite (three snapshots a case, 88 cases)."""
    state: dict[str, object] = {}

    def walk(folder: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    state[entry.path] = ("link", os.readlink(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as file:
                        state[entry.path] = file.read()
                elif entry.is_dir(follow_symlinks=False):
                    state[entry.path] = "folder"
                    walk(entry.path)
                else:
                    state[entry.path] = "special"

    for root in roots:
        walk(str(root))
    return state


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Made once: data sets (good and bad), a finished study, a foreign study, bad journals."""
    root = tmp_path_factory.mktemp("hostile-template")
    write_image_folder(root / "bars", train_per_class=12, test_per_class=4)
    (root / "runs" / "upgrade-tiny").mkdir(parents=True)
    shutil.copy(FIXTURE_JOURNAL, root / "runs" / "upgrade-tiny" / "journal.log")
    shutil.copy(FIXTURE_SPEC, root / "upgrade.toml")
    _write_bad_data(root)
    _write_bad_journals(root)
    return root


def _lay_out(template: Path, root: Path, cache: Path) -> None:
    """A copy of the template, a FIFO, and a decode cache warmed as a user's would be."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(template, root, symlinks=True)
    os.mkfifo(root / "fifo")
    cache.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("CNNSWEEP_CACHE", str(cache))
        assert main(["data", "bars"]) == 0  # a bad input must not touch the cache either


@pytest.fixture(scope="module")
def laid_out(template, tmp_path_factory) -> Place:
    """One working folder for every case: each case proves it changed nothing, so the next can
    use it as it is (a copy per case wrote some 50,000 files a session, and deleted them)."""
    top = tmp_path_factory.mktemp("hostile-place")
    place = Place(top / "work", top / "cache")
    _lay_out(template, place.root, place.cache)
    return place


@pytest.fixture
def place(laid_out, template, monkeypatch):
    pristine = snapshot(laid_out.root, laid_out.cache)
    monkeypatch.chdir(laid_out.root)
    monkeypatch.setenv("CNNSWEEP_CACHE", str(laid_out.cache))
    yield laid_out
    for path in laid_out.written:
        path.unlink(missing_ok=True)
    laid_out.written.clear()
    if snapshot(laid_out.root, laid_out.cache) != pristine:  # this case failed: lay it out anew
        _lay_out(template, laid_out.root, laid_out.cache)


def _write_bad_data(root: Path) -> None:
    bars = root / "bars"
    # A class folder with one image that is not an image.
    shutil.copytree(bars, root / "corrupt")
    (root / "corrupt" / "train" / "class3" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n no")
    # A gzip whose CRC fails, an xz cut short, an xz with a flipped byte, a tar with a bad header.
    with tarfile.open(root / "bars.tar.gz", "w:gz") as tar:
        tar.add(bars, arcname="bars")
    blob = bytearray((root / "bars.tar.gz").read_bytes())
    blob[-6] ^= 0xFF  # inside the CRC32 of the gzip trailer
    (root / "crc.tar.gz").write_bytes(blob)
    with tarfile.open(root / "bars.tar.xz", "w:xz") as tar:
        tar.add(bars, arcname="bars")
    blob = bytearray((root / "bars.tar.xz").read_bytes())
    (root / "cut.tar.xz").write_bytes(blob[: len(blob) // 2])
    blob[len(blob) // 2] ^= 0x55
    (root / "flipped.tar.xz").write_bytes(blob)
    with tarfile.open(root / "bars.tar", "w") as tar:
        tar.add(bars, arcname="bars")
    blob = bytearray((root / "bars.tar").read_bytes())
    second_header = 512 + 512  # bars/ then bars/test/ ...: a header well after the first
    blob[second_header * 4 + 148] ^= 0xFF  # its checksum field
    (root / "header.tar").write_bytes(blob)
    for name in ("bars.tar.gz", "bars.tar.xz", "bars.tar"):
        (root / name).unlink()
    # A decompression bomb among good images.
    bomb = root / "bomb"
    shutil.copytree(bars, bomb)
    (bomb / "train" / "class3" / "huge.png").write_bytes(png_header(20000, 20000))
    # Images too small for AlexNet's three poolings.
    write_image_folder(root / "tiny", train_per_class=4, test_per_class=2, classes=3, size=4)
    # CIFAR-10 batches whose labels are out of range.
    for name, label in (("label10", 10), ("labelneg", -1)):
        folder = write_cifar_folder(root / name / "cifar-10-batches-py", per_batch=10, test=10)
        batch = pickle.loads((folder / "data_batch_3").read_bytes())
        batch[b"labels"][4] = label
        (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    (root / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    (root / "a-folder.toml").mkdir()


def _write_bad_journals(root: Path) -> None:
    good = FIXTURE_JOURNAL.read_bytes().splitlines(keepends=True)
    bad = root / "bad"
    bad.mkdir()
    (bad / "garbage.log").write_bytes(b"".join([*good[:5], b"this is not json\n", *good[5:]]))
    (bad / "binary.log").write_bytes(bytes(range(256)) * 8)
    unknown = b'{"op_code":99,"worker_id":"x"}\n'
    (bad / "opcode.log").write_bytes(b"".join([*good[:7], unknown, *good[7:]]))
    (bad / "nodict.log").write_bytes(b"".join([*good[:3], b"[1, 2, 3]\n", *good[3:]]))
    (bad / "garbage-tail.log").write_bytes(b"".join([*good, b"\x00\x01garbage"]))
    # A study written by plain Optuna: trials, but no cnnsweep document.
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "foreign.log"))
    )
    study = optuna.create_study(storage=storage, study_name="foreign")
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    # A study of a future cnnsweep whose run identities this release cannot compute.
    attr = b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"identity_version":99}}\n'
    (bad / "future.log").write_bytes(b"".join(good) + attr)


def _journal(name: str) -> str:
    return f"bad/{name}"


# (id, argv built from the place, words the error line must contain)
CASES = [
    # --- train: settings ----------------------------------------------------------------------
    ("width-huge", lambda p: ["train", "--data", "bars", "--width", "1000"],
     "parameters: training it needs about"),
    ("width-inf", lambda p: ["train", "--data", "bars", "--width", "inf"], "invalid width=inf"),
    ("width-nan", lambda p: ["train", "--data", "bars", "--width", "nan"], "invalid width=nan"),
    ("seed-2**64", lambda p: ["train", "--data", "bars", "--seed", str(2**64)], "invalid seed="),
    ("seed-negative", lambda p: ["train", "--data", "bars", "--seed", "-1"], "invalid seed=-1"),
    ("lr-inf", lambda p: ["train", "--data", "bars", "--lr", "inf"], "invalid lr=inf"),
    ("lr-nan", lambda p: ["train", "--data", "bars", "--lr", "nan"], "invalid lr=nan"),
    ("min-delta-inf", lambda p: ["train", "--data", "bars", "--min-delta", "inf"],
     "invalid min_delta=inf"),
    ("batch-size-0", lambda p: ["train", "--data", "bars", "--batch-size", "0"],
     "invalid batch_size=0"),
    ("device-cpu-index", lambda p: ["train", "--data", "bars", "--device", "cpu:3"],
     "the CPU has no index"),
    ("images-too-small", lambda p: ["train", "--data", "tiny", "--width", "0.0625",
                                    "--batch-size", "2"], "too small for three 2x2 poolings"),
    # --- data ---------------------------------------------------------------------------------
    ("data-dev-zero", lambda p: ["data", "/dev/zero"], "not a regular file or a folder"),
    ("data-fifo", lambda p: ["data", "fifo"], "not a regular file or a folder: fifo"),
    ("train-data-fifo", lambda p: ["train", "--data", "fifo"], "not a regular file or a folder"),
    ("gzip-crc", lambda p: ["data", "crc.tar.gz"], "corrupt archive crc.tar.gz: BadGzipFile"),
    ("xz-cut", lambda p: ["data", "cut.tar.xz"], "corrupt archive cut.tar.xz"),
    ("xz-flipped", lambda p: ["data", "flipped.tar.xz"], "corrupt archive flipped.tar.xz"),
    ("tar-bad-header", lambda p: ["data", "header.tar"], "corrupt archive header.tar"),
    ("decompression-bomb", lambda p: ["data", "bomb"], "image too large bomb/train/class3/huge"),
    ("cifar-label-10", lambda p: ["data", "label10"], "has label 10, outside 0..9"),
    ("cifar-label-negative", lambda p: ["data", "labelneg"], "has label -1, outside 0..9"),
    ("run-corrupt-image", lambda p: ["run", p.spec('name = "h"\ndata = "corrupt"\n[fixed]\n'
                                                   'width = 0.0625\n[grid]\nlr = [0.1]\n')],
     "corrupt image corrupt/train/class3/0002.png"),
    ("train-corrupt-image", lambda p: ["train", "--data", "corrupt"],
     "corrupt image corrupt/train/class3/0002.png"),
    # --- specs ----------------------------------------------------------------------------------
    ("dependent-scalar", lambda p: ["run", p.study_spec(grid='optimizer = ["adam"]\n'
                                    'lr = { by = "optimizer", adam = 0.001 }')],
     "must be a non-empty list"),
    ("spec-not-utf8", lambda p: ["run", "latin1.toml"], "latin1.toml is not UTF-8 text"),
    ("spec-is-a-folder", lambda p: ["run", "a-folder.toml"], "is not a regular file"),
    ("spec-is-a-fifo", lambda p: ["run", "fifo"], "is not a regular file"),
    ("seeds-true", lambda p: ["run", p.study_spec("seeds = true")], "seeds"),
    ("seeds-huge-list", lambda p: ["run", p.study_spec(f"seeds = [0, {2**40}]")],
     "seeds must be between 0 and 4294967295"),
    ("grid-axis-seed", lambda p: ["run", p.study_spec(grid="seed = [1, 2]")],
     "list seeds in the top-level 'seeds'"),
    ("a-million-seeds", lambda p: ["run", p.study_spec("seeds = 1000000")],
     "more than 100,000 runs"),
    ("seed-count-absurd", lambda p: ["run", p.study_spec(f"seeds = {10**12}")],
     "a seed count must be between 1 and"),
    ("preset-escapes-runs", lambda p: ["run", p.spec('name = "h"\ndata = "bars"\n[grid]\n'
                                       'optimizer = ["adam"]\n[presets."/../../x"]\nwidth = 0.5\n'),
                                       "--preset", "/../../x"], "invalid preset name '/../../x'"),
    ("fixed-lr-inf", lambda p: ["run", p.spec('name = "h"\n[fixed]\nlr = inf\n[grid]\n'
                                              'optimizer = ["adam"]\n')], "invalid lr=inf"),
    ("grid-width-nan", lambda p: ["run", p.study_spec(grid="width = [nan]")],
     "invalid width=nan"),
    ("grid-value-a-list", lambda p: ["run", p.study_spec(grid="lr = [[0.1]]")],
     "grid axis 'lr' has value [0.1]"),
    # --- the report's future work: augmentation, k-fold, search ---------------------------------
    ("augment-unknown", lambda p: ["run", p.study_spec(grid='augment = ["none", "rotate"]')],
     "unknown augmentation 'rotate'"),
    ("folds-1", lambda p: ["run", p.study_spec('protocol = "kfold"', 'folds = [1]')],
     "invalid folds=1"),
    ("search-low-above-high", lambda p: ["run", p.search_spec("lr = { low = 0.1, high = 0.01 }")],
     "search range 'lr': low 0.1 must be below high 0.01"),
    ("search-log-from-zero", lambda p: ["run", p.search_spec("lr = { low = 0, high = 0.1, "
                                                             "log = true }")],
     "search range 'lr': a log range needs low > 0"),
    ("search-sampler-unknown", lambda p: ["run", p.search_spec('lr = [0.1]', 'sampler = "cma"')],
     "invalid search.sampler='cma'"),
    ("search-pruner-unknown", lambda p: ["run", p.search_spec('lr = [0.1]', 'pruner = "asha"')],
     "invalid search.pruner='asha'"),
    ("search-trials-0", lambda p: ["run", p.search_spec("lr = [0.1]", "", trials=0)],
     "invalid search.trials=0"),
    ("search-and-grid", lambda p: ["run", p.search_spec("lr = [0.1]", "", grid=True)],
     "a [grid] or a [search], not both"),
    ("search-range-lr-negative", lambda p: ["run", p.search_spec("lr = { low = -1, high = 1 }")],
     "search setting lr=-1.0: invalid lr=-1.0"),
    ("workers-100000", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--workers",
                                  "100000", "--devices", "cpu"],
     "invalid --workers 100000: must be between 1 and 256"),
    ("runs-per-device-0", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                     "--runs-per-device", "0", "--devices", "cpu"],
     "invalid --runs-per-device '0'"),
    ("runs-per-device-word", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                        "--runs-per-device", "many", "--devices", "cpu"],
     "a count from 1 to 256, or auto"),
    ("workers-and-runs-per-device", lambda p: ["run", "upgrade.toml", "--workers", "2",
                                               "--runs-per-device", "2"],
     "give --workers or --runs-per-device, not both"),
    ("watch-too-often", lambda p: ["status", "--study", "upgrade-tiny", "--watch", "0.01"],
     "invalid --watch 0.01: seconds, at least 0.1"),
    ("watch-nan", lambda p: ["status", "--study", "upgrade-tiny", "--watch", "nan"],
     "invalid --watch nan"),
    ("watch-and-json", lambda p: ["status", "--study", "upgrade-tiny", "--watch", "--json"],
     "give --watch or --json, not both"),
    ("runs-per-device-0-dry-run", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                             "--runs-per-device", "0", "--dry-run"],
     "invalid --runs-per-device '0'"),
    ("workers-and-runs-per-device-dry-run", lambda p: ["run", "upgrade.toml", "--workers", "2",
                                                       "--runs-per-device", "2", "--dry-run"],
     "give --workers or --runs-per-device, not both"),
    # A dry run checks what the same command would: every option, the devices too.
    ("workers-negative-dry-run", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                            "--workers", "-3", "--dry-run"],
     "invalid --workers -3: must be between 1 and 256"),
    ("device-unknown-dry-run", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                          "--devices", "gpu", "--dry-run"],
     "unknown device 'gpu'"),
    ("heartbeat-0-dry-run", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                       "--heartbeat", "0", "--dry-run"],
     "invalid --heartbeat 0: must be at least 1 second"),
    # A study of CIFAR-10 (not in the cache: a download) on a store nobody answers at: the store
    # is refused first, before any download or decode.
    ("store-unreachable-before-a-download", lambda p: ["run", p.spec(
        'name = "h"\n[fixed]\nwidth = 0.0625\n[grid]\noptimizer = ["adam"]\n'), "--store",
        "postgresql://127.0.0.1:9/db", "--devices", "cpu"],
     "cannot reach store postgresql+psycopg://127.0.0.1:9/db"),
    ("max-runs-0", lambda p: ["run", "upgrade.toml", "--max-runs", "0"], "invalid --max-runs 0"),
    # --- worker settings ------------------------------------------------------------------------
    ("heartbeat-0", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--heartbeat", "0"],
     "invalid --heartbeat 0: must be at least 1 second"),
    ("heartbeat-nan", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--heartbeat", "nan"],
     "invalid --heartbeat nan"),
    ("grace-negative", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--grace", "-1"],
     "invalid --grace -1: must be at least 3 x --heartbeat (30 s)"),
    ("grace-short", lambda p: ["worker", "--study", "upgrade-tiny", "--heartbeat", "5",
                               "--grace", "10"], "invalid --grace 10"),
    ("max-attempts-0", lambda p: ["worker", "--study", "upgrade-tiny", "--max-attempts", "0"],
     "invalid --max-attempts 0"),
    ("checkpoints-a-device", lambda p: ["run", "upgrade.toml", "--preset", "tiny",
                                        "--checkpoints", "/dev/null", "--devices", "cpu"],
     "invalid --checkpoints '/dev/null': it is not a folder"),
    ("checkpoints-under-a-file", lambda p: ["worker", "--study", "upgrade-tiny",
                                            "--checkpoints", "upgrade.toml/ckpt"],
     "invalid --checkpoints 'upgrade.toml/ckpt': it is under 'upgrade.toml', which is not"),
    # --- stores ---------------------------------------------------------------------------------
    ("study-name-path", lambda p: ["status", "--study", "../../etc"],
     "invalid study name '../../etc'"),
    ("worker-foreign-study", lambda p: ["worker", "--store", "foreign.log", "--study", "foreign"],
     "was not created by cnnsweep"),
    ("status-foreign-study", lambda p: ["status", "--store", "foreign.log", "--study", "foreign"],
     "was not created by cnnsweep"),
    ("journal-garbage-line", lambda p: ["status", "--store", _journal("garbage.log"), "--study",
                                        "upgrade-tiny"], "line 6 is not a JSON line"),
    ("journal-binary", lambda p: ["status", "--store", _journal("binary.log"), "--study", "x"],
     "binary.log: line 1 is not"),
    ("journal-unknown-op", lambda p: ["report", "--store", _journal("opcode.log"), "--study",
                                      "upgrade-tiny", "-o", "out"],
     "line 8 is an unknown op code 99"),
    ("journal-not-an-operation", lambda p: ["export", "--store", _journal("nodict.log"), "--study",
                                            "upgrade-tiny", "-o", "x.csv"],
     "line 4 is not a journal operation"),
    ("journal-garbage-tail", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--store",
                                        _journal("garbage-tail.log"), "--devices", "cpu"],
     "is not a journal line"),
    ("store-empty", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--store", "",
                               "--devices", "cpu"], "invalid --store ''"),
    # Refused before the data is read: no decode, no cache entry.
    ("journal-under-a-file", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--store",
                                        "upgrade.toml/journal.log", "--devices", "cpu"],
     "cannot open store upgrade.toml/journal.log: 'upgrade.toml' is not a folder"),
    ("journal-is-a-device", lambda p: ["status", "--store", "/dev/zero", "--study", "x"],
     "is not a regular file"),
    ("identity-from-the-future", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--store",
                                            _journal("future.log"), "--devices", "cpu"],
     "run identity version 99"),
    ("password-with-at", lambda p: ["run", "upgrade.toml", "--preset", "tiny", "--store",
                                    "postgresql://user:p@ss@127.0.0.1:9/db", "--devices", "cpu"],
     "cannot parse store URL postgresql+psycopg://127.0.0.1:9/db"),
    # --- outputs --------------------------------------------------------------------------------
    ("export-empty-name", lambda p: ["export", "--study", "upgrade-tiny", "-o", ""],
     "invalid output file ''"),
    ("export-root", lambda p: ["export", "--study", "upgrade-tiny", "-o", "/"],
     "invalid output file '/'"),
    ("export-folder", lambda p: ["export", "--study", "upgrade-tiny", "-o", "bars"],
     "it is a folder"),
    ("export-format", lambda p: ["export", "--study", "upgrade-tiny", "-o", "x.xml", "--format",
                                 "xml"], "invalid choice: 'xml'"),
    # A file named for one format is never written in another (x.xlsx or x.parquet as CSV).
    ("export-suffix-unknown", lambda p: ["export", "--study", "upgrade-tiny", "-o", "x.xlsx"],
     "cannot tell the format of 'x.xlsx' by its name"),
    ("export-suffix-and-format-differ", lambda p: ["export", "--study", "upgrade-tiny", "-o",
                                                   "x.csv", "--format", "parquet"],
     "--format parquet but the file 'x.csv' is named .csv"),
    ("claims-metric-not-numeric", lambda p: ["report", "--study", "upgrade-tiny", "-o", "out",
                                             "--claims", p.spec(
        '[[claims]]\nid = "z"\nclaim = "labels grow"\nmetric = "label"\n'
        'tests = [{ factor = "optimizer", greater = "adam", lesser = "sgd" }]\n', "claims.toml")],
     "unknown metric 'label'; valid metrics: test_accuracy"),
    ("claims-not-utf8", lambda p: ["report", "--study", "upgrade-tiny", "-o", "out", "--claims",
                                   "latin1.toml"], "is not UTF-8 text"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(place, argv, words, capsys):
    args = argv(place)
    before = snapshot(place.root, place.cache)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("cnnsweep: error: "), err
    assert words in err, err
    assert "Traceback" not in err + out
    assert "p@ss" not in err and "ss@" not in err  # never a password, or a piece of one
    after = snapshot(place.root, place.cache)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], changed


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
