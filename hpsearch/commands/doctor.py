"""`hpsearch doctor STUDY.yaml`: check a launch before it happens; each problem with its fix."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import subprocess
import time
from collections.abc import Callable

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage

from hpsearch.batch_size import visible_gpus
from hpsearch.commands.common import add_study_arguments, bounded_int, load, study_name
from hpsearch.errors import HpsearchError, StorageError
from hpsearch.storage import (
    StorageURL,
    check_reachable,
    create_engine,
    filesystem_type,
    foreign_tables,
    not_a_database,
    open_storage,
    refuse_sqlite_across_machines,
)
from hpsearch.storage.attrs import VERSIONS_ATTR
from hpsearch.version import __version__

NAME = "doctor"
HELP = "check storage, versions, clocks, GPUs and pool sizes before a launch"
Check = Callable[[], str]  # returns what is fine; raises Problem with the fix


class Problem(Exception):
    """A check that failed; its message says what is wrong and how to fix it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--planned-workers", type=bounded_int("--planned-workers", 1, 100_000), default=1,
        metavar="N",
        help="how many worker processes will use this storage (for the connection check)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    loaded, url = load(args)
    name = study_name(args, loaded)
    storage_holder: list[RDBStorage | sa.Engine] = []
    checks: list[tuple[str, Check]] = [
        ("storage", lambda: _reachable(url, storage_holder)),
        ("schema", lambda: _schema(storage_holder)),
        ("clock", lambda: _clock(url, storage_holder)),
        ("versions", lambda: _versions(storage_holder, name)),
        ("connections", lambda: _connections(url, storage_holder, args.planned_workers)),
        ("sqlite", lambda: _sqlite(url, args.planned_workers)),
        ("gpus", _gpus),
    ]
    problems = 0
    for label, check in checks:
        try:
            print(f"ok       {label:<12} {check()}")
        except (Problem, HpsearchError) as e:
            problems += 1
            print(f"PROBLEM  {label:<12} {e}")
    print(f"{problems} problem(s)" if problems else "all checks passed")
    return 1 if problems else 0


def _reachable(url: StorageURL, holder: list[RDBStorage | sa.Engine]) -> str:
    what = not_a_database(url.sqlite_path) if url.sqlite_path is not None else None
    if what is not None:
        raise Problem(
            f"{url.redacted}: {url.sqlite_path} is {what}, not an SQLite database; point the "
            "storage at a study's database, or at a path that does not exist yet"
        )
    if url.sqlite_path is not None and not url.sqlite_path.exists():
        # doctor writes nothing: an in-memory database stands for the one `run` creates
        holder.append(sa.create_engine("sqlite://"))
        return f"{url.redacted}: no database yet; the first `hpsearch run` creates it"
    check_reachable(url)
    if url.kind == "grpc":
        return f"{url.redacted} (the proxy is not checked further)"
    try:
        storage = open_storage(url, create_tables=False)
    except StorageError:  # no Optuna tables: an empty database, or another program's
        engine = create_engine(url)
        tables = foreign_tables(engine)
        if tables:
            engine.dispose()
            raise Problem(
                f"{url.redacted} is reachable but holds other tables ({', '.join(tables)}) "
                "and no Optuna study; give hpsearch a database of its own"
            ) from None
        holder.append(engine)
        return f"{url.redacted} reachable"
    assert isinstance(storage, RDBStorage)
    holder.append(storage)
    return f"{url.redacted} reachable"


def _storage(holder: list[RDBStorage | sa.Engine]) -> RDBStorage | None:
    """The opened storage; None for a reachable database that has no Optuna tables yet."""
    if not holder:
        raise Problem("skipped: the storage is not reachable (see above)")
    return holder[0] if isinstance(holder[0], RDBStorage) else None


def _engine(holder: list[RDBStorage | sa.Engine]) -> sa.Engine:
    storage = _storage(holder)
    return storage.engine if storage is not None else holder[0]  # type: ignore[return-value]


def _schema(holder: list[RDBStorage | sa.Engine]) -> str:
    storage = _storage(holder)
    if storage is None:
        return "empty database: the first `hpsearch run` creates Optuna's tables"
    try:
        current = storage.get_current_version()
    except AssertionError:  # Optuna asserts that a revision is recorded; a reader records none
        return "Optuna's tables, no schema version recorded: the next `hpsearch run` records it"
    head = storage.get_head_version()
    if current != head:
        raise Problem(
            f"schema {current} is older than this Optuna's {head}; run "
            "`optuna storage upgrade --storage URL` once, with every worker stopped"
        )
    return f"Optuna schema {current} (current)"


def _clock(url: StorageURL, holder: list[RDBStorage | sa.Engine]) -> str:
    if url.kind == "sqlite":
        return f"local clock, timezone {time.strftime('%Z')} (SQLite has no server clock)"
    with _engine(holder).connect() as c:
        server = c.execute(sa.text("SELECT CURRENT_TIMESTAMP")).scalar_one()
    here = dt.datetime.now(dt.UTC)
    if server.tzinfo is None:  # MySQL returns the session's local time without a zone
        server = server.replace(tzinfo=here.astimezone().tzinfo)
    skew = abs((here - server).total_seconds())
    if skew > 30:
        raise Problem(
            f"this machine's clock is {skew:.0f}s away from the database's; heartbeats and the "
            "study timeout compare clocks: enable NTP (timedatectl set-ntp true)"
        )
    return f"{skew:.1f}s from the database's clock; timezone {time.strftime('%Z')}"


def _versions(holder: list[RDBStorage | sa.Engine], name: str) -> str:
    here = f"hpsearch {__version__}, optuna {importlib.metadata.version('optuna')}"
    storage = _storage(holder)
    try:
        if storage is None:
            raise KeyError(name)
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return f"{here}; study {name!r} does not exist yet"
    seen = {t.user_attrs.get(VERSIONS_ATTR) for t in study.get_trials(deepcopy=False)} - {None}
    mismatched = sorted(str(v) for v in seen if not str(v).startswith(here))
    if mismatched:
        raise Problem(
            f"this machine has {here}, but trials ran with {mismatched[0]}; install the same "
            "versions on every worker (pip install 'hpsearch==X' 'optuna==Y')"
        )
    return f"{here}, as recorded in the study" if seen else here


def _connections(url: StorageURL, holder: list[RDBStorage | sa.Engine], planned: int) -> str:
    if url.kind not in ("postgresql", "mysql"):
        return "not a server database"
    query = "SHOW max_connections" if url.kind == "postgresql" else "SELECT @@max_connections"
    with _engine(holder).connect() as c:
        limit = int(c.execute(sa.text(query)).scalar_one())
    # Each worker holds at most pool_size + max_overflow = 4 connections (trial + heartbeat).
    needed = planned * 4
    if needed > limit * 0.8:
        raise Problem(
            f"{planned} workers may open {needed} connections, but the server allows {limit}; "
            "raise max_connections or run `hpsearch storage-proxy` in front of the database"
        )
    return f"{planned} worker(s) need up to {needed} of the server's {limit} connections"


def _sqlite(url: StorageURL, planned: int) -> str:
    if url.sqlite_path is None:
        return "not SQLite"
    refuse_sqlite_across_machines(url)
    kind = filesystem_type(url.sqlite_path.parent) or "unknown"
    return f"SQLite on a local {kind} filesystem: fine for workers on this one machine"


def _gpus() -> str:
    gpus = visible_gpus()
    if not gpus:
        return "no GPU visible: trials run on the CPU"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.free,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        raise Problem(f"{len(gpus)} GPU(s) listed but nvidia-smi failed: {e}") from None
    return "; ".join(line.strip() for line in out.splitlines())
