"""Retrying storage calls while the database is away: what counts as "gone", and the backoff.

A worker that runs for days meets database restarts, failovers and connections cut by a
firewall. A call that fails because the connection is gone is tried again with backoff (about
three minutes in all, longer than a typical server restart); a constraint or data error is
raised at once, since waiting does not cure it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc as sa_exc
from optuna.exceptions import StorageInternalError

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Waits between attempts; about three minutes in all, longer than a typical server restart.
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 15, 30, 30, 30, 60)
RETRY_SECONDS = sum(BACKOFF_SECONDS)
# What a storage call raises when the database fails it (Optuna wraps SQLAlchemy's errors).
STORAGE_ERRORS = (StorageInternalError, sa_exc.SQLAlchemyError)


# Errors that look like a lost connection to SQLAlchemy (OperationalError) but that waiting
# does not cure: a full disk (SQLite, PostgreSQL's DiskFull, MySQL's 1114), a read-only file.
_PERMANENT = (
    "database or disk is full", "disk i/o error", "readonly database", "no space left",
    "could not extend file", "is full", "unable to open database file",
)  # fmt: skip


def is_permanent(error: BaseException) -> bool:
    """Whether `error` is a database failure that retrying cannot fix (a full disk)."""
    text = f"{error} {getattr(error, 'orig', '')} {error.__cause__ or ''}".lower()
    return any(marker in text for marker in _PERMANENT)


def is_disconnect(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) means the database connection is unusable."""
    if is_permanent(error):
        return False
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(current, sa_exc.IntegrityError | sa_exc.DataError):
            return False
        current = current.__cause__ or current.__context__
    return False


def first_line(error: BaseException) -> str:
    """The database's own one-line reason inside a wrapped error (for logs and messages)."""
    cause = error.__cause__ or error
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


class _Backoff(threading.local):
    """Per thread: how long its retries may last (None: the whole schedule), and since when."""

    limit: float | None = None
    since: float = 0.0


_backoff = _Backoff()


def give_up_after(seconds: float) -> None:
    """From now on, this thread's storage calls stop retrying after `seconds` (a worker stops)."""
    _backoff.limit = seconds
    _backoff.since = time.monotonic()


def stopping() -> bool:
    """Whether this thread was told to stop and its `give_up_after` time has passed: a long
    wait for the database (a worker's start-up) ends then."""
    return _backoff.limit is not None and time.monotonic() - _backoff.since >= _backoff.limit


def pause_while_running(seconds: float) -> None:
    """Sleep, ending early once this thread is `stopping()` (a signal arrived meanwhile)."""
    end = time.monotonic() + seconds
    while not stopping() and (left := end - time.monotonic()) > 0:
        time.sleep(min(0.2, left))


def waits(max_wait: float | None = None) -> list[float]:
    """Waits between attempts: doubling up to 60 s, or to `max_wait`; about 3 minutes in all."""
    if max_wait is None:
        return list(BACKOFF_SECONDS)
    out = [min(w, max_wait) for w in BACKOFF_SECONDS]
    while sum(out) < RETRY_SECONDS:
        out.append(max_wait)
    return out


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    on_retry: Callable[[], None],
    max_wait: float | None = None,
) -> T:
    """Run `call`, retrying with backoff while the database connection is gone."""
    started = time.monotonic()
    schedule = waits(max_wait)
    for attempt, wait in enumerate((*schedule, None)):
        try:
            return call()
        except (StorageInternalError, sa_exc.SQLAlchemyError) as e:
            limit = _backoff.limit
            if wait is not None and limit is not None:
                wait = min(wait, max(0.0, started + limit - time.monotonic())) or None
            if wait is None or not is_disconnect(e):
                raise
            level = logging.WARNING if attempt < 3 or attempt % 10 == 0 else logging.DEBUG
            _log.log(
                level, "database unavailable or busy in %s (attempt %d): %s; retrying in %gs",
                what, attempt + 1, first_line(e), wait,
            )  # fmt: skip
            on_retry()
            time.sleep(wait)
    raise AssertionError("unreachable")
