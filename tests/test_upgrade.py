"""A store written by an earlier release keeps working: same run_ids, nothing run twice.

tests/fixtures/store-0.1.0/ holds a journal written by cnnsweep 0.1.0 (see its README). Every
later release must re-run it without enqueueing or training anything, and without touching it.
"""

import shutil
from pathlib import Path

import pytest

from cnnsweep.cli import main
from cnnsweep.store import Store
from tests.conftest import write_image_folder

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0"
# The run_ids 0.1.0 printed for this study (`cnnsweep run upgrade.toml --preset tiny --dry-run`).
IDS_0_1_0 = ["fbd4736b4a3ec40c", "071d4164a04d874f", "6b5b537e84375b79", "be0170351e576e09"]


@pytest.fixture
def old_study(tmp_path, monkeypatch) -> Path:
    write_image_folder(tmp_path / "bars", 40, 10)  # the data it was run on, written again
    shutil.copy(FIXTURE / "upgrade.toml", tmp_path / "upgrade.toml")
    journal = tmp_path / "runs" / "upgrade-tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    shutil.copy(FIXTURE / "journal.log", journal)
    monkeypatch.chdir(tmp_path)
    return journal


def test_an_old_store_is_rerun_with_nothing_enqueued_and_nothing_touched(old_study, capsys):
    before = old_study.read_bytes()
    assert main(["run", "upgrade.toml", "--preset", "tiny", "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "complete: 4;" in out
    assert old_study.read_bytes() == before  # not one byte appended
    records = Store.open(None, "upgrade-tiny").records()
    assert [r.run_id for r in records] == IDS_0_1_0
    assert all(r.state == "complete" and r.attempts == 1 for r in records)


def test_an_old_store_keeps_its_identity_version_and_dry_run_shows_its_ids(old_study, capsys):
    store = Store.open(None, "upgrade-tiny")
    assert store.identity_version == 0
    assert main(["run", "upgrade.toml", "--preset", "tiny", "--dry-run"]) == 0
    printed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert printed == IDS_0_1_0
    for command in (["status"], ["export", "-o", "old.csv"], ["report", "-o", "old-report"]):
        assert main([*command, "--study", "upgrade-tiny"]) == 0
    assert "complete: 4" in capsys.readouterr().out


def test_a_new_study_is_stored_with_this_releases_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store.open_or_create(None, "fresh")
    assert store.identity_version == 1
    assert Store.open(None, "fresh").identity_version == 1
