"""The study-wide budget: one ledger row per study that every worker claims trials from.

Optuna counts `n_trials` per process, and `MaxTrialsCallback` only looks after a trial ends, so
N workers overshoot by up to N - 1 trials. Here a slot is claimed with one conditional UPDATE
that the database serialises:

    UPDATE hpsearch_ledger SET claimed = claimed + 1
    WHERE study_id = ? AND claimed < trial_limit AND <time and GPU-hour limits not reached>

One row changed means the slot is ours; none means the budget is spent. A worker claims in the
same transaction that creates (or starts a queued) trial (`ResilientRDBStorage.use_budget`):
a slot never exists without its trial, so a worker killed, or a reply lost, between the two
cannot lose a slot. A fresh or enqueued trial takes a slot; the retry of a crashed trial does not
(it takes the place of the trial it retries), so `claimed` is the number of distinct trials
started. The table lives beside Optuna's in the same database; Optuna and optuna-dashboard
ignore it. (`retry_slots` is kept for ledgers written by earlier versions, which claimed a slot
for each retry and added one back.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from hpsearch.storage import call_with_retries

T = TypeVar("T")

_metadata = sa.MetaData()
ledger_table = sa.Table(
    "hpsearch_ledger",
    _metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trial_limit", sa.Integer, nullable=True),
    sa.Column("claimed", sa.Integer, nullable=False, default=0),
    sa.Column("retry_slots", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("gpu_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("gpu_seconds_limit", sa.Float, nullable=True),
)


class BudgetSpent(Exception):
    """No slot left for a new trial in this study: every budget limit reached or none left."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"the budget of study {study_id} is spent")
        self.study_id = study_id


@dataclass(frozen=True)
class Limits:
    """The budget a run asks for; None means unlimited."""

    n_trials: int | None = None
    timeout_s: float | None = None
    gpu_hours: float | None = None


@dataclass(frozen=True)
class LedgerState:
    """A snapshot of the ledger, for progress lines and `hpsearch status`."""

    claimed: int
    retry_slots: int
    trial_limit: int | None
    started_at: float | None
    timeout_s: float | None
    gpu_seconds: float
    gpu_seconds_limit: float | None

    def spent_reason(self, now: float) -> str | None:
        """Why no slot can be claimed now, or None while the budget lasts."""
        if self.trial_limit is not None and self.claimed >= self.trial_limit + self.retry_slots:
            return f"n_trials reached ({self.claimed - self.retry_slots}/{self.trial_limit})"
        if (
            self.timeout_s is not None
            and self.started_at is not None
            and now - self.started_at >= self.timeout_s
        ):
            return f"timeout reached ({self.timeout_s:.0f}s since the first trial)"
        if self.gpu_seconds_limit is not None and self.gpu_seconds >= self.gpu_seconds_limit:
            return f"gpu_hours reached ({self.gpu_seconds / 3600:.2f} h)"
        return None


class Ledger:
    """The budget row of one study in a SQL database."""

    def __init__(self, engine: sa.Engine, study_id: int, *, max_wait: float | None = None) -> None:
        self._engine = engine
        self._study_id = study_id
        self._max_wait = max_wait
        try:
            self._retry(lambda: _metadata.create_all(engine, checkfirst=True), "create table")
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
            # Workers starting together race to create the table; one wins, the rest retry.
            time.sleep(0.5)
            self._retry(lambda: _metadata.create_all(engine, checkfirst=True), "create table")

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return call_with_retries(
            call,
            what=f"budget ledger {what}",
            on_retry=self._engine.dispose,
            max_wait=self._max_wait,
        )

    def set_limits(self, limits: Limits) -> None:
        """Create the row, or update its limits (a later run may raise or lower the budget)."""
        t = ledger_table
        values = {
            "trial_limit": limits.n_trials,
            "timeout_s": limits.timeout_s,
            "gpu_seconds_limit": None if limits.gpu_hours is None else limits.gpu_hours * 3600,
        }
        row = {"study_id": self._study_id, "claimed": 0, "retry_slots": 0, "gpu_seconds": 0.0}

        def upsert() -> None:
            with self._engine.begin() as c:
                updated = c.execute(
                    sa.update(t).where(t.c.study_id == self._study_id).values(values)
                )
                if updated.rowcount == 0:
                    c.execute(sa.insert(t).values(**row, **values))

        try:
            self._retry(upsert, "set limits")
        except sa.exc.IntegrityError:
            # Another worker inserted the row first; its limits come from the same file.
            self._retry(upsert, "set limits")

    def claim(self, *, now: float | None = None) -> bool:
        """Take one slot; False when the budget is spent."""
        return self._update(self._claim_statement(now, count=True), "claim") == 1

    def claim_in(self, session: Any, *, count: bool, now: float | None = None) -> bool:
        """Claim inside `session`'s transaction (the one creating the trial); False if spent.

        `count=False` (a retry) claims no slot of `n_trials` but still needs time and GPU hours.
        """
        statement = self._claim_statement(now, count=count)
        statement = statement.where(ledger_table.c.study_id == self._study_id)
        return int(session.execute(statement).rowcount) == 1

    def spent(self) -> BudgetSpent:
        """The exception `ask()` raises when no slot is left."""
        return BudgetSpent(self._study_id)

    def _claim_statement(self, now: float | None, *, count: bool) -> sa.Update:
        now = time.time() if now is None else now
        t = ledger_table
        statement = sa.update(t).where(
            sa.or_(
                t.c.timeout_s.is_(None),
                t.c.started_at.is_(None),
                t.c.started_at + t.c.timeout_s > now,
            ),
            sa.or_(t.c.gpu_seconds_limit.is_(None), t.c.gpu_seconds < t.c.gpu_seconds_limit),
        )
        started = sa.func.coalesce(t.c.started_at, now)
        if not count:
            return statement.values(started_at=started)
        return statement.where(
            sa.or_(t.c.trial_limit.is_(None), t.c.claimed < t.c.trial_limit + t.c.retry_slots)
        ).values(claimed=t.c.claimed + 1, started_at=started)

    def add_retry_slot(self) -> None:
        """One more slot (what earlier workers did for each retry; retries now claim none)."""
        t = ledger_table
        self._update(sa.update(t).values(retry_slots=t.c.retry_slots + 1), "retry slot")

    def spend_gpu_seconds(self, seconds: float) -> None:
        t = ledger_table
        self._update(sa.update(t).values(gpu_seconds=t.c.gpu_seconds + seconds), "spend")

    def _update(self, statement: sa.Update, what: str) -> int:
        statement = statement.where(ledger_table.c.study_id == self._study_id)

        def run() -> int:
            with self._engine.begin() as c:
                return int(c.execute(statement).rowcount)

        return self._retry(run, what)

    def state(self) -> LedgerState | None:
        t = ledger_table

        def read() -> sa.Row[Any] | None:
            with self._engine.connect() as c:
                return c.execute(sa.select(t).where(t.c.study_id == self._study_id)).first()

        row = self._retry(read, "read")
        if row is None:
            return None
        return LedgerState(
            claimed=row.claimed,
            retry_slots=row.retry_slots,
            trial_limit=row.trial_limit,
            started_at=row.started_at,
            timeout_s=row.timeout_s,
            gpu_seconds=row.gpu_seconds,
            gpu_seconds_limit=row.gpu_seconds_limit,
        )
