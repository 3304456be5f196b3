"""The figures `status` needs of a study, counted by the database.

A `FrozenTrial` carries every parameter, attribute and intermediate value: building 20,000 of them
takes seconds of CPU, and `status --watch` does it again every refresh. `status` needs counts,
sums, a median and the RUNNING trials, so on a database a few narrow queries on Optuna's tables
do the work: trials grouped by worker and state, and by what decides their planned and run epochs
(with the largest step of each learning curve a SQL aggregate); only the trials' times and the
RUNNING trials are read row by row. On other storages (the gRPC proxy) the same summary is made
from the trials themselves (`summarise`), so the numbers do not depend on where the study lives.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect.savings import EPOCHS_PARAM, planned_epochs, ran_epochs
from hpsearch.inspect.source import StudyView
from hpsearch.storage.attrs import EPOCHS_ATTR, EPOCHS_RUN_ATTR, FAILED_TRIAL_ATTR, WORKER_ATTR
from hpsearch.storage.optuna_compat import ARTIFACTS_PREFIX, artifact_ids, models, trial_id
from hpsearch.study import EXPONENT_PREFIX

# The parameter names that may hold `epochs`: its value, or an older study's exponent.
_EPOCHS_NAMES = (EPOCHS_PARAM, EXPONENT_PREFIX + EPOCHS_PARAM)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

# (state, epochs planned, epochs run): what a COMPLETE or PRUNED trial adds to the savings.
Run = tuple[TrialState, float | None, float]


@dataclass(frozen=True, slots=True)
class Running:
    """A RUNNING trial."""

    id: int
    number: int
    start: dt.datetime | None
    worker: str | None  # `host:pid#n`, when a worker runs it


@dataclass(slots=True)
class WorkerSeen:
    """What a worker's finished trials say of it."""

    finished: int = 0
    last_end: dt.datetime | None = None


@dataclass
class Summary:
    """A study as `status` counts it."""

    counts: Counter[str] = field(default_factory=Counter)  # trials by state name
    retries: int = 0  # trials that re-run a failed one (Optuna's `failed_trial` attribute)
    first_start: dt.datetime | None = None
    last_end: dt.datetime | None = None  # of the finished trials
    durations: list[float] = field(default_factory=list)  # seconds of each COMPLETE trial
    finished_s: float = 0.0  # seconds the finished trials ran
    runs: Counter[Run] = field(default_factory=Counter)  # COMPLETE and PRUNED trials
    complete_step: int | None = None  # the largest step a COMPLETE trial reported
    workers: dict[str, WorkerSeen] = field(default_factory=dict)
    running: list[Running] = field(default_factory=list)  # in trial-id order
    points: list[tuple[int, list[float]]] = field(default_factory=list)  # number, values
    artifacts: set[str] = field(default_factory=set)  # ids of what the trials uploaded

    def add_times(
        self, state: TrialState, start: dt.datetime | None, end: dt.datetime | None
    ) -> None:
        self.counts[state.name] += 1
        if start is not None and (self.first_start is None or start < self.first_start):
            self.first_start = start
        if state not in _FINISHED or end is None:
            return
        if self.last_end is None or end > self.last_end:
            self.last_end = end
        seconds = (end - start).total_seconds() if start is not None else None
        self.finished_s += seconds or 0.0
        if state == TrialState.COMPLETE and seconds is not None:
            self.durations.append(seconds)

    def add_worker(
        self, worker: object, state: TrialState, end: dt.datetime | None, count: int = 1
    ) -> None:
        if not isinstance(worker, str):
            return
        seen = self.workers.setdefault(worker, WorkerSeen())
        if state not in _FINISHED:
            return
        seen.finished += count
        if end is not None and (seen.last_end is None or end > seen.last_end):
            seen.last_end = end


def read_summary(view: StudyView) -> Summary:
    """The study's summary: by SQL on a database, else from the trials themselves."""
    if not isinstance(view.storage, RDBStorage):
        return summarise(view, view.trials())
    with view.storage.engine.connect() as c:
        return _read(c, view)


def summarise(view: StudyView, trials: Iterable[FrozenTrial]) -> Summary:
    """The summary of `trials`, read whole (what `read_summary` counts on a database)."""
    s = Summary()
    for t in trials:
        s.add_times(t.state, t.datetime_start, t.datetime_complete)
        s.retries += FAILED_TRIAL_ATTR in t.system_attrs
        worker = t.user_attrs.get(WORKER_ATTR)
        s.add_worker(worker, t.state, t.datetime_complete)
        if t.state == TrialState.RUNNING:
            s.running.append(Running(trial_id(t), t.number, t.datetime_start,
                                     worker if isinstance(worker, str) else None))  # fmt: skip
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            planned = planned_epochs(view.user_params(t.params).get(EPOCHS_PARAM), t.user_attrs)
            s.runs[(t.state, planned, ran_epochs(t.user_attrs, t.last_step))] += 1
        if t.state == TrialState.COMPLETE and t.last_step is not None:
            s.complete_step = max(s.complete_step or 0, t.last_step)
        if view.multi_objective and t.state == TrialState.COMPLETE and t.values is not None:
            s.points.append((t.number, list(t.values)))
        s.artifacts.update(artifact_ids(t))
    return s


def _read(c: sa.Connection, view: StudyView) -> Summary:
    trials = models.TrialModel.__table__
    user = models.TrialUserAttributeModel.__table__
    system = models.TrialSystemAttributeModel.__table__
    ours = trials.c.study_id == view.study_id
    s = Summary()
    for state, start, end in c.execute(
        sa.select(trials.c.state, trials.c.datetime_start, trials.c.datetime_complete)
        .where(ours)
        .order_by(trials.c.trial_id)
    ):
        s.add_times(state, start, end)
    worker = user.alias("worker")
    on_worker = sa.and_(worker.c.trial_id == trials.c.trial_id, worker.c.key == WORKER_ATTR)
    by_worker = (
        sa.select(worker.c.value_json, trials.c.state, sa.func.count(),
                  sa.func.max(trials.c.datetime_complete))
        .join_from(trials, worker, on_worker)
        .where(ours)
        .group_by(worker.c.value_json, trials.c.state)
    )  # fmt: skip
    for text, state, count, end in c.execute(by_worker):
        s.add_worker(json.loads(text), state, end, count)
    for key, number, start, text in c.execute(
        sa.select(trials.c.trial_id, trials.c.number, trials.c.datetime_start, worker.c.value_json)
        .outerjoin_from(trials, worker, on_worker)
        .where(ours, trials.c.state == TrialState.RUNNING)
        .order_by(trials.c.trial_id)
    ):  # fmt: skip
        name = None if text is None else json.loads(text)
        s.running.append(Running(key, number, start, name if isinstance(name, str) else None))
    of_study = system.c.trial_id.in_(sa.select(trials.c.trial_id).where(ours))
    s.retries = c.execute(
        sa.select(sa.func.count()).where(of_study, system.c.key == FAILED_TRIAL_ATTR)
    ).scalar_one()
    s.artifacts = {
        key.removeprefix(ARTIFACTS_PREFIX)
        for key in c.execute(
            sa.select(system.c.key).where(
                of_study, system.c.key.startswith(ARTIFACTS_PREFIX, autoescape=True)
            )
        ).scalars()
    }
    s.runs = _runs(c, view)
    steps = models.TrialIntermediateValueModel.__table__
    s.complete_step = c.execute(
        sa.select(sa.func.max(steps.c.step)).where(
            steps.c.trial_id.in_(
                sa.select(trials.c.trial_id).where(ours, trials.c.state == TrialState.COMPLETE)
            )
        )
    ).scalar_one()
    if view.multi_objective:
        s.points = _points(c, view)
    return s


def _runs(c: sa.Connection, view: StudyView) -> Counter[Run]:
    """COMPLETE and PRUNED trials counted by what decides their planned and run epochs: a few
    dozen groups where there are thousands of trials."""
    trials = models.TrialModel.__table__
    user = models.TrialUserAttributeModel.__table__
    params = models.TrialParamModel.__table__
    steps = models.TrialIntermediateValueModel.__table__
    epochs, run = user.alias("epochs"), user.alias("epochs_run")
    # A trial's last step only counts where it has no `epochs_run` (see `ran_epochs`): looked up
    # for those trials alone, and for the COMPLETE trials' largest step (`Savings`) at once.
    largest = (
        sa.select(sa.func.max(steps.c.step))
        .where(steps.c.trial_id == trials.c.trial_id)
        .scalar_subquery()
    )
    last = sa.case((run.c.value_json.is_(None), largest)).label("last")
    columns = (
        trials.c.state,
        params.c.param_name,
        params.c.param_value,
        params.c.distribution_json,
        epochs.c.value_json,
        run.c.value_json,
        last,
    )
    query = (
        sa.select(*columns, sa.func.count())
        .select_from(trials)
        .outerjoin(params, sa.and_(params.c.trial_id == trials.c.trial_id,
                                   params.c.param_name.in_(_EPOCHS_NAMES)))
        .outerjoin(epochs, sa.and_(epochs.c.trial_id == trials.c.trial_id,
                                   epochs.c.key == EPOCHS_ATTR))
        .outerjoin(run, sa.and_(run.c.trial_id == trials.c.trial_id,
                                run.c.key == EPOCHS_RUN_ATTR))
        .where(trials.c.study_id == view.study_id,
               trials.c.state.in_((TrialState.COMPLETE, TrialState.PRUNED)))
        .group_by(*columns)
    )  # fmt: skip
    out: Counter[Run] = Counter()
    for state, name, value, distribution, planned_text, run_text, step, count in c.execute(query):
        param = {} if name is None else {name: _distribution(distribution).to_external_repr(value)}
        attrs: dict[str, Any] = {}
        if planned_text is not None:
            attrs[EPOCHS_ATTR] = json.loads(planned_text)
        if run_text is not None:
            attrs[EPOCHS_RUN_ATTR] = json.loads(run_text)
        planned = planned_epochs(view.user_params(param).get(EPOCHS_PARAM), attrs)
        out[(state, planned, ran_epochs(attrs, None if step is None else int(step)))] += count
    return out


def _points(c: sa.Connection, view: StudyView) -> list[tuple[int, list[float]]]:
    """Each COMPLETE trial's objective values, in objective order (as Optuna builds them)."""
    trials = models.TrialModel.__table__
    values = models.TrialValueModel.__table__
    found: dict[int, dict[int, float]] = {}
    for number, objective, value, kind in c.execute(
        sa.select(trials.c.number, values.c.objective, values.c.value, values.c.value_type)
        .join_from(trials, values, values.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == view.study_id, trials.c.state == TrialState.COMPLETE)
        .order_by(trials.c.trial_id)
    ):  # fmt: skip
        found.setdefault(number, {})[objective] = models.TrialValueModel.stored_repr_to_value(
            value, kind
        )
    return [(n, [v[i] for i in sorted(v)]) for n, v in found.items()]


@functools.lru_cache(maxsize=256)
def _distribution(text: str) -> BaseDistribution:
    # A study has a few distinct distributions, repeated on every trial: parse each once.
    return json_to_distribution(text)
