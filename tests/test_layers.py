"""Layers: a worker loads what training needs and nothing of the report; reading a stored study
by name loads no torch."""

import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0"


def modules_after(code: str, cwd: Path | None = None) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=cwd, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())  # the last line: the probe's


def test_a_spawned_worker_imports_no_report_code():
    from cnnsweep import runner

    # A spawned process imports the module of its target function to find it: that module, and
    # only what it imports, is loaded before the worker's first run.
    module = runner.worker_process.__module__
    assert module == "cnnsweep.worker"
    loaded = modules_after(f"import {module}")
    assert "torch" in loaded
    assert not loaded & {"matplotlib", "scipy", "jinja2", "pandas"}, loaded


def test_reading_a_stored_study_by_name_imports_no_torch(tmp_path):
    journal = tmp_path / "runs" / "upgrade-tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    shutil.copy(FIXTURE / "journal.log", journal)
    for command in (["status", "--study", "upgrade-tiny"],
                    ["export", "--study", "upgrade-tiny", "-o", "out.csv"]):  # fmt: skip
        loaded = modules_after(
            f"from cnnsweep.cli import main\nassert main({command!r}) == 0", cwd=tmp_path
        )
        assert "torch" not in loaded, command
