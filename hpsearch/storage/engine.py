"""Database engines: the one set of engine settings, and a reachability check with a wait.

Optuna's `RDBStorage` builds its engine from `engine_kwargs(url, pool_size)`; hpsearch's own
engines (the budget ledger's, `doctor`'s, the reachability check's) come from `create_engine`,
so every connection to a study's database has the same timeouts and pool.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy

from hpsearch.errors import StorageError
from hpsearch.storage.retry import first_line, is_disconnect, pause_while_running, stopping
from hpsearch.storage.url import PASSWORD_ENV, StorageURL

_log = logging.getLogger(__name__)


def engine_kwargs(url: StorageURL, pool_size: int) -> dict[str, Any]:
    """The keyword arguments of `sqlalchemy.create_engine` for a study's database."""
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


def create_engine(url: StorageURL, *, pool_size: int = 1) -> sqlalchemy.Engine:
    """An engine on the study's database with `engine_kwargs` (not for grpc:// URLs)."""
    return sqlalchemy.create_engine(url.secret_url, **engine_kwargs(url, pool_size))


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
    engine = create_engine(url)
    started, pause = time.monotonic(), 1.0
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sqlalchemy.text("SELECT 1"))
                return
            except sqlalchemy.exc.SQLAlchemyError as e:
                reason = first_line(e)
                final = any(word in reason.lower() for word in _FINAL)
                out_of_time = time.monotonic() - started + pause > wait or stopping()
                if final or not is_disconnect(e) or out_of_time:
                    raise StorageError(
                        f"cannot reach storage {url.redacted}: {reason}; check that the server "
                        f"runs and the URL, user and {PASSWORD_ENV} are right"
                    ) from None
                _log.warning("waiting for storage %s: %s", url.redacted, reason)
                pause_while_running(pause)
                pause = min(pause * 2, 10.0)
    finally:
        engine.dispose()
