"""Open a study read-only, page through its trials, and show parameters as the user wrote them.

Nothing here creates tables or writes a row: the storage is opened with `create_tables=False` and
without heartbeats, and the budget ledger is read only when its table already exists.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import Ledger, LedgerState, ledger_table
from hpsearch.errors import StorageError
from hpsearch.spec import LoadedSpec, PowerOfTwoParam
from hpsearch.storage import StorageURL, open_storage
from hpsearch.storage.attrs import (
    ENQUEUED_ATTR,
    GIT_COMMIT_ATTR,
    HOST_ATTR,
    SPACE_ATTR,
    VERSIONS_ATTR,
    WORKER_ATTR,
)
from hpsearch.storage.optuna_compat import frozen_trial, models, trial_id
from hpsearch.study import EXPONENT_PREFIX, encoding_of

# Trials read per database round trip: bounds memory for studies of tens of thousands of trials.
PAGE_SIZE = 500

# User attributes that are bookkeeping, not results: kept out of summaries (export keeps them).
PROVENANCE_ATTRS = frozenset(
    {WORKER_ATTR, HOST_ATTR, VERSIONS_ATTR, GIT_COMMIT_ATTR, ENQUEUED_ATTR}
)


@dataclass
class StudyView:
    """One study in one storage, opened read-only."""

    loaded: LoadedSpec
    url: StorageURL
    storage: BaseStorage
    study_id: int
    name: str
    directions: list[StudyDirection]
    metrics: list[str]
    study_attrs: dict[str, Any] = field(default_factory=dict)  # user and system, merged

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @functools.cached_property
    def power_of_two(self) -> frozenset[str]:
        """The power-of-two parameters: from the file and the stored space."""
        names = {
            n for n, p in self.loaded.spec.search_space.items() if isinstance(p, PowerOfTwoParam)
        }
        stored = self.study_attrs.get(SPACE_ATTR)
        if isinstance(stored, Mapping):
            for name, param in (stored.get("search_space") or {}).items():
                if isinstance(param, Mapping) and param.get("type") == "power_of_two":
                    names.add(name)
        return frozenset(names)

    @functools.cached_property
    def power_encoding(self) -> str:
        """How this study stores its powers of two (`study.powers`: older studies' exponents)."""
        return encoding_of(self.study_attrs)

    def user_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna parameters -> the values the objective saw (`log2_batch_size: 5` -> 32).

        Parameters the file does not name (a study edited since, or one not made by hpsearch)
        are kept, so nothing is silently dropped.
        """
        powers = self.power_of_two
        out: dict[str, Any] = {}
        for key, value in params.items():
            name = key.removeprefix(EXPONENT_PREFIX)
            if key.startswith(EXPONENT_PREFIX) and name in powers:
                out[name] = 2 ** int(value)
            else:
                out[key] = value
        return out

    def trials(
        self,
        *,
        page_size: int | None = None,
        up_to_id: int | None = None,
        without: frozenset[str] = frozenset(),
    ) -> Iterator[FrozenTrial]:
        """Every trial in trial-id order, read `page_size` at a time (all at once off RDB).

        `without`: user attributes not read (on a database), large ones a view does not show.
        """
        size = page_size or PAGE_SIZE
        if not isinstance(self.storage, RDBStorage):
            for trial in self.storage.get_all_trials(self.study_id, deepcopy=False):
                if up_to_id is None or trial_id(trial) <= up_to_id:
                    yield trial
            return
        last = -1
        while True:
            page = self._page(last, size, up_to_id, without)
            yield from page
            if len(page) < size:
                return
            last = trial_id(page[-1])

    def _page(
        self, after_id: int, size: int, up_to_id: int | None, without: frozenset[str]
    ) -> list[FrozenTrial]:
        # A LIMIT that the public `get_all_trials` lacks, and plain rows of each of Optuna's
        # tables (SQLAlchemy Core) rather than its ORM objects: a sixth of the CPU on a big
        # study. Each page is its own short transaction, so a long export never holds a
        # snapshot the workers write around.
        assert isinstance(self.storage, RDBStorage)
        t = models.TrialModel.__table__
        query = sa.select(t).where(t.c.study_id == self.study_id, t.c.trial_id > after_id)
        if up_to_id is not None:
            query = query.where(t.c.trial_id <= up_to_id)
        with self.storage.engine.connect() as c:
            rows = c.execute(query.order_by(t.c.trial_id).limit(size)).all()
            ids = [row.trial_id for row in rows]
            params = _by_trial(
                c,
                ids,
                models.TrialParamModel.__table__,
                "param_name",
                "param_value",
                "distribution_json",
                order="param_id",
            )
            values = _by_trial(
                c, ids, models.TrialValueModel.__table__, "objective", "value", "value_type"
            )
            steps = _by_trial(
                c,
                ids,
                models.TrialIntermediateValueModel.__table__,
                "step",
                "intermediate_value",
                "intermediate_value_type",
            )
            user = _attrs(c, ids, models.TrialUserAttributeModel.__table__, without)
            system = _attrs(c, ids, models.TrialSystemAttributeModel.__table__, frozenset())
        return [
            frozen_trial(row, params.get(row.trial_id, []), values.get(row.trial_id, []),
                         steps.get(row.trial_id, []), user.get(row.trial_id, {}),
                         system.get(row.trial_id, {}))
            for row in rows
        ]  # fmt: skip

    def trial(self, trial_id: int) -> FrozenTrial:
        return self.storage.get_trial(trial_id)

    def study(self) -> optuna.Study:
        """An `optuna.Study` on the same storage, for the plots (which read every trial)."""
        return optuna.load_study(
            study_name=self.name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
        )

    def ledger(self) -> LedgerState | None:
        """The budget ledger's row, or None (no ledger table: never created here)."""
        if not isinstance(self.storage, RDBStorage):
            return None
        if not sa.inspect(self.storage.engine).has_table(ledger_table.name):
            return None
        # The table exists, so Ledger's `create_all(checkfirst=True)` creates nothing.
        return Ledger(self.storage.engine, self.study_id).state()

    def heartbeat_ages(self) -> dict[int, float]:
        """Seconds since the last heartbeat of each RUNNING trial that has one, by trial id."""
        if not isinstance(self.storage, RDBStorage):
            return {}
        beats = models.TrialHeartbeatModel.__table__
        trials = models.TrialModel.__table__
        query = (
            sa.select(trials.c.trial_id, beats.c.heartbeat, sa.func.now())
            .join(beats, beats.c.trial_id == trials.c.trial_id)
            .where(trials.c.study_id == self.study_id, trials.c.state == TrialState.RUNNING)
        )
        with self.storage.engine.connect() as connection:
            rows = connection.execute(query).all()
        # The database's own clock on both sides, as Optuna's stale-trial check does: worker
        # and reader clocks may differ, and the column is naive in the server's time zone.
        return {key: (naive(now) - naive(beat)).total_seconds() for key, beat, now in rows}

    def count(self, state: TrialState) -> int | None:
        """Trials in `state`, counted by the database (None off RDB storage)."""
        if not isinstance(self.storage, RDBStorage):
            return None
        trials = models.TrialModel.__table__
        query = sa.select(sa.func.count()).where(
            trials.c.study_id == self.study_id, trials.c.state == state
        )
        with self.storage.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def close(self) -> None:
        if isinstance(self.storage, RDBStorage):
            self.storage.engine.dispose()


def _by_trial(
    c: sa.Connection, ids: list[int], table: sa.Table, *columns: str, order: str | None = None
) -> dict[int, list[tuple[Any, ...]]]:
    """`columns` of `table`'s rows for the trials `ids`, by trial id."""
    query = sa.select(table.c.trial_id, *(table.c[n] for n in columns))
    query = query.where(table.c.trial_id.in_(ids))
    if order is not None:
        query = query.order_by(table.c[order])
    out: dict[int, list[tuple[Any, ...]]] = {}
    for row in c.execute(query):
        out.setdefault(row[0], []).append(row[1:])
    return out


def _attrs(
    c: sa.Connection, ids: list[int], table: sa.Table, without: frozenset[str]
) -> dict[int, dict[str, Any]]:
    """The attributes in `table` of the trials `ids`, decoded, but for the keys `without`."""
    query = sa.select(table.c.trial_id, table.c.key, table.c.value_json)
    query = query.where(table.c.trial_id.in_(ids))
    if without:
        query = query.where(table.c.key.not_in(without))
    out: dict[int, dict[str, Any]] = {}
    for key, name, text in c.execute(query):
        out.setdefault(key, {})[name] = json.loads(text)
    return out


def naive(value: dt.datetime | str) -> dt.datetime:
    """A database timestamp as a naive datetime (SQLite returns text, PostgreSQL an aware one)."""
    if isinstance(value, str):  # SQLite returns CURRENT_TIMESTAMP as text
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def open_view(loaded: LoadedSpec, url: StorageURL, *, name: str | None = None) -> StudyView:
    """Open the study `name` (default: the file's `name:`) for reading.

    Raises:
        StorageError: no database yet, no Optuna tables in it, or no such study.
    """
    study_name = name or loaded.spec.name
    path = url.sqlite_path
    if path is not None and not path.is_file():
        raise StorageError(
            f"no study database at {path}: nothing has run yet; start a worker with "
            f"`hpsearch run {loaded.path}` or point --storage at the study's database"
        )
    storage = open_storage(url, create_tables=False)  # raises where there are no Optuna tables
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        if isinstance(storage, RDBStorage):
            storage.engine.dispose()
        listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "none"
        raise StorageError(
            f"study {study_name!r} is not in storage {url.redacted} (studies there: {listed}); "
            "pass --name, or check --storage / HPSEARCH_STORAGE"
        ) from None
    directions = storage.get_study_directions(study_id)
    # hpsearch's bookkeeping is in the system attributes (user ones in studies made before).
    attrs = {**storage.get_study_user_attrs(study_id), **storage.get_study_system_attrs(study_id)}
    return StudyView(
        loaded=loaded,
        url=url,
        storage=storage,
        study_id=study_id,
        name=study_name,
        directions=directions,
        metrics=_metrics(loaded, attrs, len(directions)),
        study_attrs=attrs,
    )


def _metrics(loaded: LoadedSpec, attrs: Mapping[str, Any], n: int) -> list[str]:
    """The metric names of the stored spec, else the file's, else `value_<i>`."""
    stored = attrs.get(SPACE_ATTR)
    if isinstance(stored, Mapping) and len(stored.get("metrics") or []) == n:
        return [str(m) for m in stored["metrics"]]
    if len(loaded.spec.metrics) == n:
        return list(loaded.spec.metrics)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def is_better(a: float, b: float, direction: StudyDirection) -> bool:
    return a < b if direction == StudyDirection.MINIMIZE else a > b


def pareto_front(
    points: list[tuple[int, list[float]]], directions: list[StudyDirection]
) -> list[int]:
    """The keys of the non-dominated points (every objective turned into one to minimise)."""
    sign = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
    losses = sorted(((tuple(s * v for s, v in zip(sign, values, strict=True)), key)
                     for key, values in points))  # fmt: skip
    front: list[tuple[tuple[float, ...], int]] = []
    # Sorted lexicographically, a point can only be dominated by one that comes before it.
    for loss, key in losses:
        dominated = any(
            all(f <= x for f, x in zip(other, loss, strict=True)) and other != loss
            for other, _ in front
        )
        if not dominated:
            front.append((loss, key))
    return [key for _, key in front]


def duration_s(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def utc_iso(value: dt.datetime | None) -> str | None:
    """Optuna's naive local datetimes as ISO 8601 in UTC (`2026-01-02T03:04:05+00:00`)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def curve(trial: FrozenTrial, metric: str) -> dict[int, float]:
    """A trial's learning curve: its intermediate values, else its `<metric>@<step>` attributes.

    Optuna keeps no intermediate values for several objectives (it cannot prune them), so the
    objective's `report` stores the first metric's curve as trial attributes instead.
    """
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    out: dict[int, float] = {}
    prefix = f"{metric}@"
    for key, value in trial.user_attrs.items():
        step = key.removeprefix(prefix)
        if key.startswith(prefix) and step.isdigit() and isinstance(value, int | float):
            out[int(step)] = float(value)
    return dict(sorted(out.items()))


def is_curve_attr(key: str, metrics: list[str]) -> bool:
    metric, _, step = key.rpartition("@")
    return metric in metrics and step.isdigit()
