"""Where a study lives: the storage URL's precedence, its password, its redaction, and opening it.

Precedence, first match wins: the `--storage` flag > the `HPSEARCH_STORAGE` environment variable >
`storage:` in the study file > `sqlite:///<root>/storage/hpsearch.db`, where <root> is the git
checkout holding the study file (or the study file's folder outside git).

A password never comes from the study file or the command line (both are visible: in version
control and in `ps`). It comes from `HPSEARCH_DB_PASSWORD`, or from `HPSEARCH_STORAGE`, and is
never printed: every URL shown to a person goes through `StorageURL.redacted`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hpsearch.errors import StorageError
from hpsearch.resilient import ResilientRDBStorage, is_disconnect
from hpsearch.spec import LoadedSpec

_log = logging.getLogger(__name__)

PASSWORD_ENV = "HPSEARCH_DB_PASSWORD"
STORAGE_ENV = "HPSEARCH_STORAGE"

# SQLAlchemy drivers installed with hpsearch; a bare dialect gets the one we ship.
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}  # fmt: skip


@dataclass(frozen=True)
class StorageURL:
    """A resolved storage URL. `str()` is redacted; `secret_url` holds the password."""

    secret_url: str
    source: str

    @property
    def kind(self) -> str:
        """`sqlite`, `postgresql`, `mysql` or `grpc`."""
        if self.secret_url.startswith("grpc://"):
            return "grpc"
        return make_url(self.secret_url).get_backend_name()

    @property
    def redacted(self) -> str:
        if self.kind == "grpc":
            return self.secret_url
        return make_url(self.secret_url).render_as_string(hide_password=True)

    @property
    def sqlite_path(self) -> Path | None:
        if self.kind != "sqlite":
            return None
        database = make_url(self.secret_url).database
        return Path(database) if database and database != ":memory:" else None

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StorageURL({self.redacted!r}, source={self.source!r})"


def default_root(study_dir: Path) -> Path:
    """The folder that holds `storage/`: the git checkout of the study file, else its folder."""
    for folder in (study_dir, *study_dir.parents):
        if (folder / ".git").exists():
            return folder
    return study_dir


def resolve(
    loaded: LoadedSpec, *, flag: str | None = None, environ: Mapping[str, str] | None = None
) -> StorageURL:
    """Pick the storage URL by precedence (see the module docstring) and add the password.

    Raises:
        StorageError: the URL is malformed, or a password is on the command line.
    """
    env = os.environ if environ is None else environ
    given = flag_or_env(flag, env)
    if given is not None:
        raw, source = given
    elif loaded.spec.storage:
        raw, source = loaded.spec.storage, f"{loaded.path}: storage"
    else:
        db = default_root(loaded.directory.resolve()) / "storage" / "hpsearch.db"
        raw, source = f"sqlite:///{db}", "default"
    return _normalise(raw, source, base=loaded.directory.resolve(), password=env.get(PASSWORD_ENV))


def flag_or_env(flag: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(URL, where it came from) from `--storage` or `HPSEARCH_STORAGE`, the first two rules.

    Raises:
        StorageError: a password on the command line.
    """
    if flag:
        if _password_of(flag) is not None:
            raise StorageError(
                "--storage: a password on the command line is visible to every user in `ps`; "
                f"remove it and set {PASSWORD_ENV} (or put the whole URL in {STORAGE_ENV})"
            )
        return flag, "--storage"
    if env.get(STORAGE_ENV):
        return env[STORAGE_ENV], STORAGE_ENV
    return None


def _password_of(raw: str) -> str | None:
    if raw.startswith("grpc://"):
        return None
    try:
        return make_url(raw).password
    except ArgumentError:
        return None


def _normalise(raw: str, source: str, *, base: Path, password: str | None) -> StorageURL:
    if raw.startswith("grpc://"):
        return StorageURL(raw, source)
    try:
        url = make_url(raw)
    except ArgumentError:
        raise StorageError(
            f"{source}: {raw!r} is not a storage URL; use e.g. sqlite:///storage/hpsearch.db, "
            "postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db"
        ) from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise StorageError(
            f"{source}: storage {backend!r} is not supported; use sqlite, postgresql, mysql "
            "or grpc://host:port (the storage proxy)"
        )
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if backend == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        if not path.is_absolute():
            path = base / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"{source}: cannot create the folder of the SQLite database {path}: "
                f"{e.strerror}; pick a writable path"
            ) from None
        url = url.set(database=str(path.resolve()))
    if password is not None and backend != "sqlite":
        url = url.set(password=password)
    return StorageURL(_render(url), source)


def _render(url: URL) -> str:
    # SQLAlchemy percent-encodes the password (`@ % / :`), which leaves braces; Optuna's
    # RDBStorage runs str.format over the URL, so braces are doubled to survive it.
    return url.render_as_string(hide_password=False).replace("{", "{{").replace("}", "}}")


def _engine_kwargs(url: StorageURL, pool_size: int) -> dict[str, Any]:
    if url.kind == "sqlite":
        # Several local workers share one file: wait for the lock rather than failing with
        # "database is locked" (the writer holds it for milliseconds).
        return {"connect_args": {"timeout": 120}}
    # No pool_pre_ping: it costs a round trip on every storage call. A connection that died
    # (server restart, idle timeout) fails its first use, and `ResilientRDBStorage` then drops
    # the pool and retries, so a dead connection costs one retry instead of a failed trial.
    return {
        "pool_pre_ping": False,
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_recycle": 3600,
        "connect_args": {"connect_timeout": 10},
    }


# Errors that waiting does not cure: wrong credentials or a database that does not exist.
_FINAL = ("authentication", "access denied", "does not exist", "unknown database")


def check_reachable(url: StorageURL, *, wait: float = 0.0) -> None:
    """Connect and run `SELECT 1`; while the server is down, keep trying for `wait` seconds.

    A worker restarted while its database restarts too should wait for it, not exit; a
    command a person runs (`validate`, `status`) answers at once (`wait=0`).

    Raises:
        StorageError: naming the redacted URL and the server's one-line reason.
    """
    if url.kind == "grpc":
        return
    engine = sqlalchemy.create_engine(
        url.secret_url.replace("{{", "{").replace("}}", "}"), **_engine_kwargs(url, 1)
    )
    started, pause = time.monotonic(), 1.0
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sqlalchemy.text("SELECT 1"))
                return
            except sqlalchemy.exc.SQLAlchemyError as e:
                reason = _first_line(e)
                final = any(word in reason.lower() for word in _FINAL)
                if final or not is_disconnect(e) or time.monotonic() - started + pause > wait:
                    raise StorageError(
                        f"cannot reach storage {url.redacted}: {reason}; check that the server "
                        f"runs and the URL, user and {PASSWORD_ENV} are right"
                    ) from None
                _log.warning("waiting for storage %s: %s", url.redacted, reason)
                time.sleep(pause)
                pause = min(pause * 2, 10.0)
    finally:
        engine.dispose()


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


StaleCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def open_storage(
    url: StorageURL,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: StaleCallback | None = None,
    pool_size: int = 2,
    create_tables: bool = True,
    wait: float = 0.0,
) -> BaseStorage:
    """Open an Optuna storage on `url`, with heartbeats when `heartbeat_interval` is set.

    Raises:
        StorageError: the database is unreachable or its schema is incompatible.
    """
    if url.kind == "grpc":
        from hpsearch.proxy import RetryingGrpcStorageProxy  # gRPC is imported only here

        host, _, port = url.secret_url.removeprefix("grpc://").rstrip("/").partition(":")
        return RetryingGrpcStorageProxy(host=host, port=int(port or 13000))
    check_reachable(url, wait=wait)
    if url.sqlite_path is not None:
        _enable_wal(url.sqlite_path)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                # Heartbeats are "experimental" in Optuna 5.0; they are the mechanism we rely
                # on for crashed workers, so the warning would only be noise for our users.
                warnings.simplefilter("ignore", ExperimentalWarning)
                return ResilientRDBStorage(
                    url.secret_url,
                    engine_kwargs=_engine_kwargs(url, pool_size),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=stale_callback,
                    skip_table_creation=not create_tables,
                    skip_compatibility_check=not create_tables,
                )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            if not create_tables:
                raise StorageError(
                    f"storage {url.redacted} holds no hpsearch study yet ({_first_line(e)}); "
                    "check the URL, or start the study with `hpsearch run`"
                ) from None
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers see "already exists" errors and succeed on a second try.
            if attempt == 4 or is_disconnect(e) and attempt >= 2:
                raise StorageError(
                    f"cannot open storage {url.redacted}: {_first_line(e)}"
                ) from None
            time.sleep(0.2 * (attempt + 1))
        except (RuntimeError, ValueError) as e:
            raise StorageError(f"cannot open storage {url.redacted}: {_first_line(e)}") from None
    raise AssertionError("unreachable")


def _enable_wal(path: Path) -> None:
    # WAL lets readers (status, the dashboard) run while a worker writes. It is a property of
    # the database file, so setting it once is enough.
    try:
        connection = sqlite3.connect(path, timeout=120)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StorageError(f"cannot open SQLite database {path}: {e}") from None


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
