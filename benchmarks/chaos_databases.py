"""The chaos run's private database servers: started, killed with -9 and restarted at will.

Never the machine's shared servers, which other tests use. PostgreSQL refuses to run as root, so
as root its server runs as the `postgres` user (`runuser`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("HPSEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, that can be killed with -9 and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.as_postgres = os.geteuid() == 0  # postgres refuses to run as root
        folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(folder, "postgres")
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else argv

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._argv(argv), check=True, capture_output=True)

    def start(self, timeout: float = 30) -> None:
        # fsync=off: only the server process is killed, never the machine, so the page cache
        # keeps every commit; it makes restarts and commits fast.
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "max_connections=200"]  # fmt: skip
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 - the server keeps it
        self.process = subprocess.Popen(
            self._argv(argv), stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepts():
                return
            if self.process.poll() is not None:
                time.sleep(0.5)  # the old postmaster's shared memory may linger a moment
                self.process = subprocess.Popen(
                    self._argv(argv),
                    stdout=open(self.folder / "postgres.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            time.sleep(0.1)
        raise RuntimeError(f"private postgres did not start; see {self.folder / 'postgres.log'}")

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2,
            ) as c:  # fmt: skip
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def kill(self) -> None:
        """kill -9 the server and all its backends (its own process group), like a crash."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        # Backends notice the postmaster's death and exit; wait until none holds the port.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._port_busy():
            time.sleep(0.05)

    def _port_busy(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def up(self) -> bool:
        return self.process is not None

    def close(self) -> None:
        self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]] | None:
        """Run a query on the private server; None while it is down (or the table missing)."""
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2,
            ) as c:  # fmt: skip
                return list(c.execute(sql).fetchall())
        except psycopg.Error:
            return None


class PrivateMariaDB:
    """A throwaway MariaDB server on a free port, that can be killed with -9 and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/chaos"

    def start(self, timeout: float = 60) -> None:
        # Commits flushed to the OS only: the server process is killed, never the machine.
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.folder / 'sock'}", "--user=root",
                "--skip-grant-tables", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=300", f"--log-error={self.folder / 'mariadb.log'}"]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._execute("CREATE DATABASE IF NOT EXISTS chaos", database=None) is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"private mariadb did not start; see {self.folder / 'mariadb.log'}")

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    @property
    def up(self) -> bool:
        return self.process is not None

    def close(self) -> None:
        self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]] | None:
        return self._execute(sql, database="chaos")

    def _execute(self, sql: str, database: str | None) -> list[tuple[Any, ...]] | None:
        import pymysql

        try:
            c = pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", database=database,
                connect_timeout=2, autocommit=True,
            )  # fmt: skip
        except pymysql.Error:
            return None
        try:
            with c.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        except pymysql.Error:
            return None
        finally:
            c.close()
