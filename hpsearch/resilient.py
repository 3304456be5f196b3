"""An RDBStorage that rides out a database restart or a dropped connection.

Optuna's RDBStorage turns any SQL error into `StorageInternalError`, and its heartbeat thread
dies on the first failed beat. A worker that runs for days will meet a database restart, a
failover or an idle connection cut by a firewall; it should wait and go on, not crash and leave
its trial RUNNING. Here every storage call retries, with exponential backoff, errors that mean
"the connection is gone" (never constraint or data errors), and a failed heartbeat is logged and
tried again at the next beat.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.dialects.mysql
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
import sqlalchemy.exc as sa_exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# Waits between attempts; about three minutes in all, longer than a typical server restart.
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 15, 30, 30, 30, 60)


def is_disconnect(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) means the database connection is unusable."""
    while error is not None:
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
            return False
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


T = TypeVar("T")


def call_with_retries(call: Callable[[], T], *, what: str, on_retry: Callable[[], None]) -> T:
    """Run `call`, retrying with backoff while the database connection is gone."""
    for attempt, wait in enumerate((*BACKOFF_SECONDS, None)):
        try:
            return call()
        except (StorageInternalError, sa_exc.SQLAlchemyError) as e:
            if wait is None or not is_disconnect(e):
                raise
            _log.warning(
                "database unavailable or busy in %s (attempt %d): %s; retrying in %gs",
                what, attempt + 1, _reason(e), wait,
            )  # fmt: skip
            on_retry()
            time.sleep(wait)
    raise AssertionError("unreachable")


def _retrying(method: F) -> F:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        return call_with_retries(
            lambda: method(self, *args, **kwargs),
            what=method.__name__,
            # Drop every pooled connection: after a restart they all died together.
            on_retry=self.engine.dispose,
        )

    return call  # type: ignore[return-value]


def _reason(error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


class ResilientRDBStorage(RDBStorage):
    """`RDBStorage` whose calls survive a database restart (see the module docstring)."""

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes in one transaction: one commit instead of one per key.

        Each trial records about six attributes of provenance; on a server database a commit is
        the dominant cost, so this keeps hpsearch's per-trial overhead small (benchmarks/).
        """

        table = models.TrialUserAttributeModel.__table__
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]

        def write() -> None:
            with self.engine.begin() as c:
                c.execute(_upsert(self.engine.dialect.name, table), rows)

        call_with_retries(write, what="set_trial_user_attrs", on_retry=self.engine.dispose)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The trials whose heartbeat stopped (what Optuna's own check would fail)."""
        return super()._get_stale_trial_ids(study_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's `fail_stale_trials` runs before every trial; hpsearch's worker runs its own
        # check instead (it records why the trial failed, which Optuna's cannot once the trial
        # is closed), so Optuna's finds nothing and costs no query.
        return []

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (StorageInternalError, sa_exc.SQLAlchemyError) as e:
            # A missed beat is harmless while shorter than the grace period; a dead heartbeat
            # thread would get this live trial failed and run twice.
            _log.warning("heartbeat of trial %d not recorded: %s", trial_id, _reason(e))
            self.engine.dispose()


def _upsert(dialect: str, table: sa.Table) -> sa.Insert:
    """INSERT that replaces an existing (trial_id, key) row: a retried trial carries copies."""
    if dialect == "mysql":
        mysql = sa.dialects.mysql.insert(table)
        return mysql.on_duplicate_key_update(value_json=mysql.inserted.value_json)
    module = sa.dialects.postgresql if dialect == "postgresql" else sa.dialects.sqlite
    insert = module.insert(table)
    return insert.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": insert.excluded.value_json}
    )


_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "get_best_trial", "stale_trial_ids",
    # Called by Optuna's own cache layer directly:
    "_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
)  # fmt: skip
for _name in _RETRIED:
    setattr(
        ResilientRDBStorage,
        _name,
        _retrying(getattr(ResilientRDBStorage, _name)),
    )
