"""Layers: a worker loads what training needs and nothing of the report; reading a stored study
by name loads no torch; the report reads frames, not the store."""

import os
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


def loaded_top_level_modules(connection) -> None:
    """Run in a worker's place: the top-level modules loaded there, sent back."""
    connection.send(sorted({m.split(".")[0] for m in sys.modules}))
    connection.close()


def test_a_worker_imports_no_report_code():
    from cnnsweep import launch, runner

    # A spawned process imports the module of its target function to find it; a fork server
    # imports WORKER_IMPORTS before it forks workers. Those, and only what they import, are
    # loaded before the worker's first run.
    assert runner.worker_process.__module__ == "cnnsweep.worker"
    assert launch.WORKER_IMPORTS == ["cnnsweep.worker_server"]  # which imports cnnsweep.worker
    # What a CPU worker has loaded: a process forked as `cnnsweep run` forks its workers, from
    # the fork server (an interpreter of its own, started by this session's first study or now).
    context = launch.start_worker_server(["cpu"])
    assert context.get_start_method() == "forkserver"
    here, there = context.Pipe(duplex=False)
    process = context.Process(target=loaded_top_level_modules, args=(there,))
    process.start()
    there.close()
    loaded = set(here.recv())
    process.join(timeout=30)
    assert "torch" in loaded and "cnnsweep" in loaded
    assert not loaded & {"matplotlib", "scipy", "jinja2", "pandas"}, loaded
    # Nor SQLAlchemy (0.4 s of the server's start): a worker of a journal file's study needs
    # none; one of a PostgreSQL study's loads it as it opens the store.
    assert "sqlalchemy" not in loaded, loaded
    # `cnnsweep run` starts that server before its own imports: launch.py imports no torch.
    assert "torch" not in modules_after("import cnnsweep.launch")


def folder_and_cache() -> tuple[str, str | None]:
    """Run in a process forked from the server: where it works, and the cache it would use."""
    return os.getcwd(), os.environ.get("CNNSWEEP_CACHE")


def test_a_process_forked_from_the_server_works_where_its_parent_does_now(tmp_path, monkeypatch):
    """The server keeps the folder and environment of the moment it started (this session's
    first study, or now): launch.adopt gives its children their parent's, as they are now."""
    from cnnsweep import launch

    context = launch.start_worker_server(["cpu"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNSWEEP_CACHE", str(tmp_path / "cache-now"))
    with context.Pool(1) as pool:  # as the server has them
        assert pool.apply(folder_and_cache) != (str(tmp_path), str(tmp_path / "cache-now"))
    with context.Pool(1, launch.adopt, (os.getcwd(), dict(os.environ))) as pool:
        assert pool.apply(folder_and_cache) == (str(tmp_path), str(tmp_path / "cache-now"))


def test_the_fork_server_serves_cpus_only(tmp_path, monkeypatch):
    from cnnsweep import launch

    assert launch.worker_context(["cpu"]).get_start_method() == "forkserver"
    assert launch.worker_context(["cpu", "cuda"]).get_start_method() == "spawn"
    assert launch.surely_cpus(["cpu"]) and not launch.surely_cpus(["cpu", "cuda:1"])
    monkeypatch.setattr(launch, "GPU_DEVICE_FILES", (str(tmp_path / "nvidia[0-9]*"),))
    assert launch.surely_cpus(["auto"])  # no GPU here: auto means the CPU
    (tmp_path / "nvidia0").touch()
    assert not launch.surely_cpus(["auto"])  # torch decides, after its import


def test_reading_a_stored_study_by_name_imports_no_torch(tmp_path):
    journal = tmp_path / "runs" / "upgrade-tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    shutil.copy(FIXTURE / "journal.log", journal)
    commands = (["status", "--study", "upgrade-tiny"],
                ["export", "--study", "upgrade-tiny", "-o", "out.csv"],
                ["report", "--study", "upgrade-tiny", "-o", "report"])  # fmt: skip
    # One interpreter runs the three in turn and says after each whether torch is loaded yet.
    # First it imports report/ alone, which must import no store (nor Optuna's storages): the
    # runner's side gathers the study into frames.
    code = (
        "import sys\nimport cnnsweep.report\n"
        "print(sorted({'torch', 'cnnsweep.store'} & set(sys.modules)), file=sys.stderr)\n"
        "from cnnsweep.cli import main\n"
    ) + "".join(
        f"assert main({command!r}) == 0\n"
        "print({'torch', 'sqlalchemy'} & set(sys.modules) or 'none', file=sys.stderr)\n"
        for command in commands
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == "[]", done.stderr  # report/ alone: no store, no torch
    said = [line for line in done.stderr.splitlines()[1:] if line == "none" or "'" in line]
    # No torch after status, export, nor report; nor SQLAlchemy, the store being a journal file.
    assert said == ["none"] * 3, done.stderr
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "report" / "report.html").is_file()


def test_a_built_in_spec_is_validated_without_torch():
    """Naming a model in a spec (seed48 says model = "alexnet") checks the name against the
    registry's known families without importing them."""
    loaded = modules_after("from cnnsweep.spec import load_study\nload_study('seed48-holdout')")
    assert "torch" not in loaded
