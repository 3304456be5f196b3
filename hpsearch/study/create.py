"""Create or join the Optuna study a spec describes, and store the spec with it.

The study is a plain Optuna study. hpsearch keeps its own bookkeeping (the spec, the search
space, its uid) in the study's system attributes under the `hpsearch:` prefix, so the optuna CLI
and optuna-dashboard read the study unchanged and its user attributes stay the user's.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from hpsearch.errors import SpecError
from hpsearch.spec import Budget, LoadedSpec, StudySpec
from hpsearch.storage.attrs import (
    ENQUEUED_ATTR,
    POWER_OF_TWO_ATTR,
    READY_ATTR,
    SPACE_ATTR,
    SPEC_ATTR,
    UID_ATTR,
)
from hpsearch.study.algorithms import make_pruner, make_sampler
from hpsearch.study.join import check_joiner, read_attr, spec_document, write_attr
from hpsearch.study.powers import VALUE, study_encoding
from hpsearch.study.space import to_optuna_params

_log = logging.getLogger(__name__)


def space_document(spec: StudySpec) -> dict[str, Any]:
    """The parts of a spec every worker of one study must agree on."""
    return {
        "directions": spec.study_directions,
        "metrics": spec.metrics,
        "search_space": {
            name: param.model_dump(exclude_none=True) for name, param in spec.search_space.items()
        },
    }


@dataclass(frozen=True)
class Joined:
    """The study a worker runs, whether it created it, and the budget the study has."""

    study: optuna.Study
    created: bool
    budget: Budget
    budget_changed: bool = False  # this worker changed the stored budget (`--change-budget`)

    @property
    def uid(self) -> str | None:
        """The id hpsearch gave the study when it created it (None: made by Optuna itself)."""
        value = read_attr(self.study, UID_ATTR)
        return str(value) if value is not None else None


def create_or_load(
    loaded: LoadedSpec,
    storage: BaseStorage | str,
    *,
    name: str | None = None,
    worker: str | None = None,
    budget: Budget | None = None,
    change_budget: bool = False,
) -> Joined:
    """Create the study, or join it when it exists.

    `budget` is the run's budget (the file's, with `hpsearch run`'s flags); a joiner's must
    equal the study's unless `change_budget`. Only the process whose INSERT created the study
    enqueues the spec's `enqueue` trials, so they run exactly once however many workers start
    together.

    Raises:
        SpecError: the study exists with other settings (see `study.join`).
    """
    spec = loaded.spec if budget is None else loaded.spec.model_copy(update={"budget": budget})
    study_name = name or spec.name
    pruner = make_pruner(spec.pruner)
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec),
            pruner=pruner,
            directions=spec.study_directions,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec, salt=worker or str(uuid.uuid4())),
            pruner=pruner,
        )
        _wait_until_ready(study)
        if (encoding := study_encoding(study)) != VALUE:  # an older study keeps its exponents
            study.sampler = make_sampler(spec, salt=worker or str(uuid.uuid4()), encoding=encoding)
        _check_directions(loaded, study, spec)
        study_budget, changed = check_joiner(
            loaded, study, spec, change_budget=change_budget, worker=worker
        )
        return Joined(study, False, study_budget, changed)
    write_attr(study, UID_ATTR, uuid.uuid4().hex)  # before the ledger: it is keyed by it
    with warnings.catch_warnings():
        # "Experimental" since Optuna 3.2; it is how the dashboard and the optuna CLI name the
        # objective (`val_accuracy`, not "Objective 0").
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(spec.metrics))
    write_attr(study, POWER_OF_TWO_ATTR, VALUE)  # before SPACE_ATTR: joiners read both
    write_attr(study, SPACE_ATTR, space_document(spec))
    write_attr(study, SPEC_ATTR, spec_document(spec))
    for values in spec.enqueue:
        study.enqueue_trial(to_optuna_params(spec, values), user_attrs={ENQUEUED_ATTR: True})
    # Joining workers wait for this, so no trial of theirs overtakes the enqueued ones.
    write_attr(study, READY_ATTR, True)
    _log.info("created study %r (%d enqueued trial(s))", study_name, len(spec.enqueue))
    return Joined(study, True, spec.budget)


def _wait_until_ready(study: optuna.Study, timeout: float = 120.0) -> None:
    """Wait while the study's creator is still storing the spec and the enqueued trials."""
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if read_attr(study, READY_ATTR) or waited > timeout:
            return  # ready, or its creator died half-way: go on rather than wait forever
        if read_attr(study, SPACE_ATTR) is None and waited > 2.0:
            return  # a study made by Optuna itself, not by hpsearch: nothing to wait for
        time.sleep(0.1)


def _check_directions(loaded: LoadedSpec, study: optuna.Study, spec: StudySpec) -> None:
    """What even a study made by Optuna itself must share with the file: its directions."""
    stored = [d.name.lower() for d in study.directions]
    if stored != spec.study_directions:
        raise SpecError(
            f"{loaded.path}: study {study.study_name!r} exists with directions {stored}, but "
            f"the file asks for {spec.study_directions}; use another `name:`"
        )
