"""When a worker stops on its own: trials failing in a row, an exhausted grid, the study
stopped for every worker (`hpsearch stop`, or its `budget.target` reached)."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections import Counter
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import Ledger, ledger_table
from hpsearch.errors import StorageError
from hpsearch.storage import (
    RETRY_ATTR,
    STORAGE_ERRORS,
    ResilientRDBStorage,
    StorageURL,
    first_line,
    is_permanent,
)
from hpsearch.storage.attrs import FAIL_REASON_ATTR, HOST_ATTR, STOP_ATTR, UID_ATTR
from hpsearch.storage.optuna_compat import storage_backend, study_id, study_storage
from hpsearch.study import read_attr, unwrapped, write_attr


class Failures:
    """Trials of this worker that failed in a row: past `limit`, the study cannot succeed here.

    Counted per worker: one machine with a broken driver or a missing package stops, the rest
    of the fleet goes on. A trial failed because its worker was stopped or crashed does not
    count (it is retried), an out-of-memory trial does (its limit is lowered each time).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reasons: list[str] = []
        self.gave_up: str | None = None

    def add(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.reasons.clear()
            return
        if trial.system_attrs.get(RETRY_ATTR) is not None:
            return
        reason = str(trial.user_attrs.get(FAIL_REASON_ATTR) or "no reason recorded")
        self.reasons.append(reason.splitlines()[0][:200])
        if len(self.reasons) >= self.limit:
            commonest, n = Counter(self.reasons).most_common(1)[0]
            self.gave_up = (
                f"stopped after {len(self.reasons)} failed trials in a row (budget.max_failures:"
                f" {self.limit}); commonest reason ({n}x): {commonest}; fix it and run again"
            )


def grid_exhausted(study: optuna.Study) -> str | None:
    """Why a grid study is done: every point of its grid has run (or is running)."""
    sampler = unwrapped(study.sampler)
    if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
        return "every point of the grid has run"
    return None


# --- a study stopped for every worker: `hpsearch stop`, or its target reached -----------------


def stop_study(
    study: optuna.Study, *, reason: str, kind: str, by: str, ledger: Ledger | None = None
) -> None:
    """Record on the study that its workers are to stop (`kind`: "stop" or "target"), and close
    its budget's ledger: from that commit on no trial starts on any worker."""
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_attr(study, STOP_ATTR, {"at": when, "by": by, "reason": reason, "kind": kind})
    if (ledger := ledger or ledger_of(study)) is not None:
        ledger.close(reason)


def stop_record(study: optuna.Study) -> dict[str, Any] | None:
    """Why the study was stopped, if it was (and not resumed since)."""
    record = read_attr(study, STOP_ATTR)
    return record if isinstance(record, dict) else None


def resume(study: optuna.Study, *, by: str, ledger: Ledger | None = None) -> dict[str, Any] | None:
    """Clear the study's stop record and open its ledger again (`hpsearch run --resume`);
    returns the record cleared."""
    record = stop_record(study)
    if record is not None:
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        write_attr(study, STOP_ATTR, {"resumed": when, "by": by, "was": record})
    if (ledger := ledger or ledger_of(study)) is not None:
        ledger.reopen()
    return record


def ledger_of(study: optuna.Study) -> Ledger | None:
    """The study's budget ledger, where its storage is a SQL database that has one."""
    backend = storage_backend(study_storage(study))
    if not isinstance(backend, ResilientRDBStorage):
        return None
    if not sa.inspect(backend.engine).has_table(ledger_table.name):
        return None
    uid = read_attr(study, UID_ATTR)
    return Ledger(backend.engine, study_id(study), uid=None if uid is None else str(uid),
                  retrying=backend.retried)  # fmt: skip


def describe(record: dict[str, Any]) -> str:
    return f"{record.get('reason', 'stopped')} (at {record.get('at')} by {record.get('by')})"


class StopWatch:
    """Looks at the study's stop record now and then: between trials, and during a trial at
    each reported step but at most every `every` seconds (a query each time)."""

    def __init__(self, study: optuna.Study, every: float = 2.0) -> None:
        self.study = study
        self.every = every
        self._last = -float("inf")

    def check(self, *, now: bool = False) -> dict[str, Any] | None:
        if not now and time.monotonic() - self._last < self.every:
            return None
        self._last = time.monotonic()
        record = stop_record(self.study)
        return record if record is not None and "reason" in record else None


# --- a storage this worker cannot use -------------------------------------------------------


def storage_cause(error: BaseException) -> BaseException | None:
    """The database error in `error`'s chain, if any (Optuna may fail on it under another)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, STORAGE_ERRORS):
            return current
        current = current.__cause__ or current.__context__
    return None


def storage_failed(url: StorageURL, error: BaseException) -> str:
    """One line for a database error the worker cannot ride out."""
    reason = first_line(error)
    fix = "check the database server's log"
    if is_permanent(error):
        where = url.sqlite_path.parent if url.sqlite_path else "the database server"
        fix = f"free disk space on {where}, or make it writable"
    return (
        f"storage {url.redacted} failed: {reason}; {fix}, then run again: the trials already "
        "finished are kept, and the one that was running is failed and retried"
    )


def refuse_other_hosts(study: optuna.Study, url: StorageURL) -> None:
    """A SQLite study that already has trials from another host is shared across machines."""
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False):
        host = trial.user_attrs.get(HOST_ATTR)
        if host is not None and host != here:
            raise StorageError(
                f"storage {url.redacted} is SQLite, but trial {trial.number} ran on host "
                f"{host!r} and this is {here!r}: SQLite serves one machine. Use a PostgreSQL or "
                "MySQL server for workers on several machines (--storage postgresql+psycopg://...)"
            )
