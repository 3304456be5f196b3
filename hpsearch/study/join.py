"""A worker joining a study: its file must describe the study as stored, but for what may change.

The stored spec is the study's. A joining machine whose copy of the file differs in anything
that changes the study (search space, metric, sampler, pruner, objective, workers, enqueued
trials) is refused with every differing key named; the budget alone may change, and only when
asked explicitly (`--change-budget`, or a budget flag of `hpsearch run`), which is logged and
recorded on the study (`BUDGET_CHANGES_ATTR`). Where this machine keeps things (its storage URL,
artifacts folder, data folder, device and loader threads) is its own business.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

import optuna
import pydantic

from hpsearch.errors import SpecError
from hpsearch.spec import Budget, LoadedSpec, StudySpec
from hpsearch.storage.attrs import BUDGET_CHANGES_ATTR, SPEC_ATTR
from hpsearch.storage.optuna_compat import study_id, study_storage

_log = logging.getLogger(__name__)


# Keys that say where this machine keeps things, not what the study is.
MACHINE_KEYS = (
    "name",
    "storage",
    "artifacts",
    "artifact_store",  # a shared folder may be mounted elsewhere on each machine
    "tracking",  # what each worker also sends its trials to
    "objective.dataset.path",
    "objective.dataset.val_path",
    "objective.device",
    "objective.num_workers",
    "objective.cpu_threads",
)


def read_attr(study: optuna.Study, key: str) -> Any:
    """An hpsearch attribute of the study: system attributes, else user ones (older studies)."""
    storage, sid = study_storage(study), study_id(study)
    value = storage.get_study_system_attrs(sid).get(key)
    return value if value is not None else storage.get_study_user_attrs(sid).get(key)


def write_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Keep hpsearch's bookkeeping out of the study's user attributes, which `optuna studies`
    prints on every row and the dashboard lists first: they stay the user's."""
    study_storage(study).set_study_system_attr(study_id(study), key, value)


def spec_document(spec: StudySpec) -> dict[str, Any]:
    """The spec as stored on the study (JSON types, defaults filled in)."""
    return json.loads(json.dumps(spec.model_dump(mode="json", exclude_none=True)))


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _machine_key(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in MACHINE_KEYS)


def differences(stored: Mapping[str, Any], mine: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (stored value, this file's value)} for every key that differs."""
    a, b = _flatten(stored), _flatten(mine)
    missing = object()
    out = {}
    for key in sorted(set(a) | set(b)):
        if _machine_key(key):
            continue
        old, new = a.get(key, missing), b.get(key, missing)
        if old != new:
            out[key] = (None if old is missing else old, None if new is missing else new)
    return out


def _shown(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _listed(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k} (study {_shown(a)}, this file {_shown(b)})" for k, a, b in
                     ((k, *v) for k, v in diffs.items()))  # fmt: skip


def _stored_document(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The stored spec with the defaults of this version filled in (an older hpsearch may have
    stored fewer keys); as stored when this version cannot read it."""
    try:
        return spec_document(StudySpec.model_validate(raw))
    except (pydantic.ValidationError, ValueError):
        return json.loads(json.dumps(raw))


def check_joiner(
    loaded: LoadedSpec,
    study: optuna.Study,
    mine: StudySpec,
    *,
    change_budget: bool,
    worker: str | None,
) -> tuple[Budget, bool]:
    """Check a joining worker's spec against the stored one; returns (study budget, changed).

    Raises:
        SpecError: the file differs in what defines the study, or in its budget without
            `change_budget`; one line naming every differing key.
    """
    raw = read_attr(study, SPEC_ATTR)
    if raw is None:  # a study made by Optuna itself: the file's budget, nothing to compare
        return mine.budget, False
    stored = _stored_document(raw)
    diffs = differences(stored, spec_document(mine))
    budget = {k: v for k, v in diffs.items() if k.startswith("budget.")}
    other = {k: v for k, v in diffs.items() if k not in budget}
    name = study.study_name
    if other:
        raise SpecError(
            f"{loaded.path}: this file differs from study {name!r} as stored: "
            f"{_listed(diffs)}; a study is defined once: use the study's settings in this file, "
            "or another `name:` for a new study"
        )
    stored_budget = Budget.model_validate(stored.get("budget") or {})
    if not budget:
        return stored_budget, False
    if not change_budget:
        raise SpecError(
            f"{loaded.path}: the budget differs from study {name!r}'s: {_listed(budget)}; "
            "pass --change-budget to make this file's budget the study's (it is recorded on "
            "the study), or use the study's budget in this file"
        )
    record_budget_change(study, stored, mine.budget, worker=worker)
    return mine.budget, True


def record_budget_change(
    study: optuna.Study, stored: Mapping[str, Any], budget: Budget, *, worker: str | None
) -> None:
    """Make `budget` the study's: stored with its spec, the change appended to its history."""
    before = stored.get("budget") or {}
    after = budget.model_dump(mode="json", exclude_none=True)
    write_attr(study, SPEC_ATTR, {**stored, "budget": after})
    changes = list(read_attr(study, BUDGET_CHANGES_ATTR) or [])
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    changes.append({"at": when, "by": worker, "from": before, "to": after})
    write_attr(study, BUDGET_CHANGES_ATTR, changes)
    _log.warning(
        "study %r: budget changed from %s to %s (recorded on the study)",
        study.study_name, json.dumps(before), json.dumps(after),
    )  # fmt: skip
