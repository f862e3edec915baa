"""A private, throwaway PostgreSQL 15 server for the multi-worker tests.

``initdb`` refuses to run as root, so as root the cluster is made and run by the ``postgres``
user in a temporary folder it owns; it listens on 127.0.0.1 only and is stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def server_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = server_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) not found")
        self.dir = Path(tempfile.mkdtemp(prefix="cnnsweep-pg-", dir="/tmp"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._template: str | None = None  # optuna_template(), made on first use
        if self.as_root:
            shutil.chown(self.dir, "postgres")

    def _run(self, *args: str) -> None:
        command = " ".join(str(a) for a in args)
        if self.as_root:
            argv = ["su", "postgres", "-s", "/bin/bash", "-c", command]
        else:
            argv = ["/bin/bash", "-c", command]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        # --no-sync, fsync off, no full-page writes: a throwaway cluster needs no durability
        # across a power cut, and its checkpoints then cost no disk flushes.
        self._run(self.bin / "initdb", "-D", self.dir / "data", "-A", "trust", "-U", "postgres",
                  "--no-sync")  # fmt: skip
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on its cluster (again, after :meth:`pause`)."""
        durability = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options = f'"-h 127.0.0.1 -p {self.port} -k {self.dir} {durability}"'
        self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-o", options, "-l",
                  self.dir / "log", "-w", "start")  # fmt: skip

    def pause(self) -> None:
        """Stop the server, keeping its cluster, as a database restart or an outage does: every
        connection to it is cut."""
        self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        try:
            # Immediate: no shutdown checkpoint, the cluster is deleted next.
            self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database: empty, or a copy of ``template`` (PostgreSQL copies it file by file)."""
        import psycopg

        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def optuna_template(self) -> str:
        """The name of a database holding Optuna's schema and no study, made once by Optuna
        itself: a copy of it is a new store as Optuna would find it after creating its tables,
        and costs half the time (0.13 s, not 0.26 s, on the 2-core AVX2-only CPU)."""
        if self._template is None:
            import optuna

            storage = optuna.storages.RDBStorage(self.create_database("optuna_template"))
            storage.engine.dispose()  # a template must have no connection when it is copied
            self._template = "optuna_template"
        return self._template

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
