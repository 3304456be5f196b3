"""The few facts `status` needs of every trial, read by the database column by column.

A `FrozenTrial` carries every parameter, attribute and intermediate value: building 20,000 of them
takes seconds of CPU, and `status --watch` does it again every refresh. `status` needs a handful
of values per trial, so on a database they come from a few narrow queries on Optuna's tables
(each one or two columns of this study's rows) and the largest step of each learning curve is a
SQL aggregate. On other storages (the gRPC proxy) the same facts are taken from the trials, so
the numbers do not depend on where the study lives.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
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

# The user attributes `status` reads, and the parameter names that may hold `epochs` (its value,
# or an older study's exponent).
_ATTRS = (WORKER_ATTR, EPOCHS_ATTR, EPOCHS_RUN_ATTR)
_EPOCHS_NAMES = (EPOCHS_PARAM, EXPONENT_PREFIX + EPOCHS_PARAM)


@dataclass(frozen=True, slots=True)
class TrialFacts:
    """One trial as `status` sees it."""

    id: int
    number: int
    state: TrialState
    start: dt.datetime | None
    end: dt.datetime | None
    values: tuple[float, ...] | None
    worker: str | None  # `host:pid#n`, when a worker ran it
    retry: bool  # it re-runs a failed trial (Optuna's `failed_trial` system attribute)
    planned: float | None  # epochs planned: see `savings`
    ran: float  # epochs run: see `savings`
    last_step: int | None  # the largest step it reported

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class StudyFacts:
    trials: list[TrialFacts]  # in trial-id order
    artifacts: set[str]  # ids of what the trials uploaded


def read_facts(view: StudyView) -> StudyFacts:
    """Every trial's facts: by SQL on a database, else from the trials themselves."""
    if not isinstance(view.storage, RDBStorage):
        trials = list(view.trials())
        return StudyFacts(
            [facts_of(view, t) for t in trials], {a for t in trials for a in artifact_ids(t)}
        )
    with view.storage.engine.connect() as c:
        return _read(c, view)


def facts_of(view: StudyView, trial: FrozenTrial) -> TrialFacts:
    """A trial's facts, from the whole trial (what `read_facts` reads off a database)."""
    attrs = trial.user_attrs
    worker = attrs.get(WORKER_ATTR)
    return TrialFacts(
        id=trial_id(trial),
        number=trial.number,
        state=trial.state,
        start=trial.datetime_start,
        end=trial.datetime_complete,
        values=None if trial.values is None else tuple(trial.values),
        worker=worker if isinstance(worker, str) else None,
        retry=FAILED_TRIAL_ATTR in trial.system_attrs,
        planned=planned_epochs(view.user_params(trial.params).get(EPOCHS_PARAM), attrs),
        ran=ran_epochs(attrs, trial.last_step),
        last_step=trial.last_step,
    )


def _read(c: sa.Connection, view: StudyView) -> StudyFacts:
    trials = models.TrialModel.__table__
    user = models.TrialUserAttributeModel.__table__
    system = models.TrialSystemAttributeModel.__table__
    params = models.TrialParamModel.__table__
    steps = models.TrialIntermediateValueModel.__table__
    values = models.TrialValueModel.__table__
    ids = sa.select(trials.c.trial_id).where(trials.c.study_id == view.study_id)

    rows = c.execute(
        sa.select(trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start,
                  trials.c.datetime_complete)
        .where(trials.c.study_id == view.study_id)
        .order_by(trials.c.trial_id)
    ).all()  # fmt: skip
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, name, text in c.execute(
        sa.select(user.c.trial_id, user.c.key, user.c.value_json).where(
            user.c.trial_id.in_(ids), user.c.key.in_(_ATTRS)
        )
    ):
        attrs[key][name] = json.loads(text)
    epochs: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, name, value, distribution in c.execute(
        sa.select(params.c.trial_id, params.c.param_name, params.c.param_value,
                  params.c.distribution_json)
        .where(params.c.trial_id.in_(ids), params.c.param_name.in_(_EPOCHS_NAMES))
    ):  # fmt: skip
        epochs[key][name] = _distribution(distribution).to_external_repr(value)
    retries = set(
        c.execute(
            sa.select(system.c.trial_id).where(
                system.c.trial_id.in_(ids), system.c.key == FAILED_TRIAL_ATTR
            )
        ).scalars()
    )
    uploaded = c.execute(
        sa.select(system.c.key).where(
            system.c.trial_id.in_(ids), system.c.key.startswith(ARTIFACTS_PREFIX, autoescape=True)
        )
    ).scalars()
    last_steps: dict[int, int] = {
        key: int(step)
        for key, step in c.execute(
            sa.select(steps.c.trial_id, sa.func.max(steps.c.step))
            .where(steps.c.trial_id.in_(ids))
            .group_by(steps.c.trial_id)
        )
    }
    objectives = _values(c, values, ids)
    facts = []
    for key, number, state, start, end in rows:
        user_attrs = attrs.get(key, {})
        worker = user_attrs.get(WORKER_ATTR)
        last = last_steps.get(key)
        facts.append(TrialFacts(
            id=key, number=number, state=state, start=start, end=end,
            values=objectives.get(key), worker=worker if isinstance(worker, str) else None,
            retry=key in retries,
            planned=planned_epochs(
                view.user_params(epochs.get(key, {})).get(EPOCHS_PARAM), user_attrs
            ),
            ran=ran_epochs(user_attrs, last), last_step=last,
        ))  # fmt: skip
    return StudyFacts(facts, {k.removeprefix(ARTIFACTS_PREFIX) for k in uploaded})


def _values(
    c: sa.Connection, values: sa.Table, ids: sa.Select[Any]
) -> dict[int, tuple[float, ...]]:
    """Each trial's objective values, in objective order (as Optuna builds them)."""
    by_trial: dict[int, dict[int, float]] = defaultdict(dict)
    for key, objective, value, kind in c.execute(
        sa.select(values.c.trial_id, values.c.objective, values.c.value, values.c.value_type)
        .where(values.c.trial_id.in_(ids))
    ):  # fmt: skip
        by_trial[key][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    return {key: _ordered(found) for key, found in by_trial.items()}


def _ordered(found: Mapping[int, float]) -> tuple[float, ...]:
    return tuple(found[i] for i in sorted(found))


@functools.lru_cache(maxsize=256)
def _distribution(text: str) -> BaseDistribution:
    # A study has a few distinct distributions, repeated on every trial: parse each once.
    return json_to_distribution(text)
