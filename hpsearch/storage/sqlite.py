"""SQLite, the embedded default: WAL for readers beside a writer, and refusing network disks."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hpsearch.errors import StorageError
from hpsearch.storage.url import StorageURL


def enable_wal(path: Path) -> None:
    """Put the database file in WAL mode (readers such as `status` run while a worker writes).

    WAL is a property of the file, so setting it once is enough.
    """
    try:
        connection = sqlite3.connect(path, timeout=120)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StorageError(f"cannot open SQLite database {path}: {e}") from None


def make_folder(url: StorageURL) -> None:
    """Make the SQLite file's folder (a worker's first run on the default location)."""
    path = url.sqlite_path
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"{url.source}: cannot create the folder of the SQLite database {path}: "
            f"{e.strerror}; pick a writable path"
        ) from None


def read_only(url: StorageURL) -> StorageURL:
    """For a reader: the same SQLite file opened read-only when its folder cannot be written
    (a read-only disk or mount), where SQLite cannot make the files WAL mode reads through;
    `immutable` reads it as it is. Any other URL as it is."""
    path = url.sqlite_path
    if path is None or os.access(path.parent, os.W_OK):
        return url
    # With a write-ahead log beside it, SQLite reads through its -shm index (read-only since
    # 3.22); without one, `immutable` needs no index at all.
    wal = path.with_name(path.name + "-wal").exists()
    query = "mode=ro&uri=true" if wal else "mode=ro&immutable=1&uri=true"
    return StorageURL(f"sqlite:///file:{path}?{query}", url.source)


class _Reads(threading.local):
    depth = 0  # > 0: this thread's transactions only read (`reading`)


_reads = _Reads()


@contextmanager
def reading() -> Iterator[None]:
    """Transactions begun meanwhile on this thread only read: they begin deferred, taking no
    lock, so in WAL mode they run beside another worker's write as a plain Optuna script's
    reads do, instead of waiting for it (`serialize_writes`)."""
    _reads.depth += 1
    try:
        yield
    finally:
        _reads.depth -= 1


def serialize_writes(engine: sa.Engine) -> None:
    """Make every transaction on `engine` take SQLite's write lock when it begins.

    SQLite ignores `SELECT ... FOR UPDATE`, the row lock that numbers trials, starts a queued
    trial once and claims the budget on a server database; and Python's sqlite3 begins a
    transaction only at its first write, so two workers can both read "WAITING" and both
    start the trial. `BEGIN IMMEDIATE` takes the lock first: one worker's read-then-write runs
    before the other's, as under the row lock. Transactions that only read (`reading`) begin
    deferred and take no lock. (SQLAlchemy's documented recipe:
    https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl)
    In WAL mode readers still run beside the writer.
    """

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below emits BEGIN

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN" if _reads.depth else "BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners would keep the old behaviour


_NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "lustre", "gpfs",
                        "ceph", "glusterfs", "9p", "afs")  # fmt: skip


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path` (Linux /proc/mounts), or None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and (
            target == fields[1] or target.startswith(fields[1].rstrip("/") + "/")
        ):
            if len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def refuse_sqlite_across_machines(url: StorageURL) -> None:
    """SQLite on a network filesystem corrupts under workers on several machines: refuse it.

    Raises:
        StorageError: with the reason and the fix (a PostgreSQL or MySQL server).
    """
    path = url.sqlite_path
    if path is None:
        return
    kind = filesystem_type(path.parent)
    if (
        kind is not None
        and kind.split(".")[0] in _NETWORK_FILESYSTEMS
        or kind in _NETWORK_FILESYSTEMS
    ):
        raise StorageError(
            f"storage {url.redacted} is a SQLite file on a network filesystem ({kind}); SQLite's "
            "locks do not work across machines and the study would be corrupted. Run a "
            "PostgreSQL or MySQL server and pass --storage postgresql+psycopg://user@host/db"
        )
