"""Every use of Optuna's private API in hpsearch, in one file: the one to check on an upgrade.

Written against Optuna 5.0.0 (`OPTUNA_VERSION`; pyproject pins `optuna==5.0.*`). Each item says
why the public API does not do, so an upgrade can replace it when Optuna offers a way.

- `models`, `create_scoped_session`, `upsert_user_attrs`: Optuna's ORM, its transaction helper
  and its attribute table written directly (several attributes in one statement), so that
  hpsearch's steps that must not be lost (a trial with its budget slot and first heartbeat, a
  fail with its reason) are one transaction inside Optuna's own tables.
- `RDBStorage` hooks that `ResilientRDBStorage` calls and overrides (`OVERRIDDEN_HOOKS`):
  `_create_new_trial` (called by the public `create_new_trial`), `_get_stale_trial_ids` (called
  by `fail_stale_trials`), and the methods Optuna's cache layer calls directly
  (`CACHE_LAYER_CALLS`), which must retry like the public ones.
- `study_id`, `trial_id`, `study_storage`, `storage_backend`, `refresh_cached_user_attrs`: the
  ids and storage behind a `Study` / `Trial` (private attributes; Optuna has no public getter).
- `forget_finished`: the cache layer holds a finished trial for good; a trial revived after a
  wrong stale judgement (`TrialFates.revive`) must be read again.
- `told_trial`: a finished trial through the cache layer's own read of the study (what the
  cache holds after `get_all_trials` is its behaviour, not its API).
- `frozen_trial`: a copy of Optuna's row-to-`FrozenTrial` builder, over plain rows of each of its
  tables (SQLAlchemy Core), for reading trials a page at a time (the public `get_all_trials` has
  no LIMIT) at a sixth of the CPU that Optuna's ORM objects cost on a big study.
- `make_grpc_server`: the gRPC proxy server with a handle to stop it gracefully
  (`run_grpc_proxy_server` blocks with no handle).
- `TranslatedStudy`: a study whose trials read translated, for a sampler that must see them
  otherwise than they are stored (`study.powers.PowersOfTwo`). Optuna's samplers read trials
  through the private `Study._get_trials` (its cached read), so the view overrides it too.
- `FrozenStudy`: the type `BaseStorage.get_all_studies` returns (not exported by optuna.study).
- `trials_study`: a study that is a given list of trials, for Optuna's plots and importance
  evaluators, which read a study only through `Study.get_trials` (their behaviour, not their
  API). `Study.add_trials` would renumber the trials (a plot's trial 12,345 drawn as trial 3)
  and copy each one.
- `ARTIFACTS_PREFIX`: the system attribute under which Optuna keeps an uploaded artifact's id.
- `reading`: an `RDBStorage` opened for reading without Optuna's version bookkeeping, which
  writes to a new database and imports alembic (0.2 s of CPU on every `status` and `best`);
  there is no constructor flag for it (`skip_compatibility_check` still stamps the revision).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import json
import threading
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb import storage as rdb_storage
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

OPTUNA_VERSION = "5.0.0"

__all__ = [
    "ARTIFACTS_PREFIX",
    "CACHE_LAYER_CALLS",
    "OPTUNA_VERSION",
    "OVERRIDDEN_HOOKS",
    "FrozenStudy",
    "artifact_ids",
    "frozen_trial",
    "create_new_trial",
    "create_scoped_session",
    "make_grpc_server",
    "models",
    "prepared_new_trial",
    "refresh_cached_user_attrs",
    "set_attr_in_session",
    "set_intermediate_value_in_session",
    "stale_trial_ids",
    "storage_backend",
    "study_id",
    "study_storage",
    "told_trial",
    "TranslatedStudy",
    "trial_id",
    "trials_study",
    "trial_intermediate_values",
    "trial_system_attrs",
    "upsert_user_attrs",
]

create_scoped_session = _create_scoped_session


class _VersionsUnlessReading(rdb_storage._VersionManager):
    """Optuna's schema-version manager, which `RDBStorage.__init__` builds: it records Optuna's
    version in a new database and stamps alembic's revision, importing alembic (0.2 s of CPU).
    A reader (`open_storage(create_tables=False)`: status, best, export) writes nothing and
    checks no version, so inside `reading()` it skips both; its methods still work when called
    (doctor's schema check), importing alembic then."""

    def __init__(self, url: str, engine: sa.Engine, scoped_session: Any) -> None:
        if getattr(_reader, "on", False):
            self.url, self.engine, self.scoped_session = url, engine, scoped_session
            return
        super().__init__(url, engine, scoped_session)


_reader = threading.local()
# Installed for the whole process: outside `reading()` it is Optuna's manager, unchanged.
rdb_storage._VersionManager = _VersionsUnlessReading  # type: ignore[misc]


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """An `RDBStorage` built inside this block reads a study's schema as it is (see above)."""
    _reader.on = True
    try:
        yield
    finally:
        _reader.on = False


# RDBStorage methods that ResilientRDBStorage overrides: Optuna's public methods call them.
OVERRIDDEN_HOOKS = ("_create_new_trial", "_get_stale_trial_ids")
# RDBStorage methods that Optuna's `_CachedStorage` calls directly instead of the public ones.
CACHE_LAYER_CALLS = ("_get_trials", "_set_trial_param", "_get_best_trial_id")


def study_id(study: optuna.Study) -> int:
    """The storage's id of `study`."""
    return int(study._study_id)


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage `study` reads and writes (Optuna's cache layer over an RDB storage)."""
    return study._storage


def storage_backend(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache layer (the `RDBStorage` itself), or `storage`."""
    return getattr(storage, "_backend", storage)


def told_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """A copy of the trial just told, read as Optuna's cache layer reads the study.

    `optimize(callbacks=...)` reads a finished trial with `get_trial`, a query of each of its
    tables that the cache layer then does not know, so the next `ask()` reads it again. Reading
    the study's changed trials (here, `states=()`: none is copied) puts the trial in the cache,
    where `get_trial` finds it, and the next `ask()` finds nothing new to read.
    """
    storage = study._storage
    storage.get_all_trials(study._study_id, deepcopy=False, states=())
    return copy.deepcopy(storage.get_trial(trial_id))


class TranslatedStudy:
    """`study` with every trial it reads passed through `translate`; all else is the study's.

    Optuna's samplers read a study's trials through `get_trials`, `trials` and the private
    `_get_trials` (the cached read), and write through its storage and ids, which stay the
    study's own: a sampler's system attributes land on the real trials.
    """

    def __init__(self, study: optuna.Study, translate: Callable[[FrozenTrial], FrozenTrial]):
        self._study = study
        self._translate = translate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states, use_cache=False)

    def _get_trials(
        self, deepcopy: bool = True, states: Any = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [self._translate(t) for t in trials]


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a live or frozen trial (not its per-study `number`)."""
    return int(trial._trial_id)


# `optuna.artifacts.upload_artifact` keeps an uploaded artifact's id in a system attribute
# `artifacts:<id>` of its trial (optuna.artifacts._upload.ARTIFACTS_ATTR_PREFIX).
ARTIFACTS_PREFIX = "artifacts:"


def artifact_ids(trial: FrozenTrial) -> list[str]:
    """The ids of the artifacts uploaded for `trial`, read without a query of its own."""
    prefix = ARTIFACTS_PREFIX
    return [key.removeprefix(prefix) for key in trial.system_attrs if key.startswith(prefix)]


def trial_intermediate_values(trial: optuna.Trial) -> Mapping[int, float]:
    """The steps a live trial holds, as `Trial.report` sees them (no storage read)."""
    values: Mapping[int, float] = trial._cached_frozen_trial.intermediate_values
    return values


def trial_system_attrs(trial: optuna.Trial) -> Mapping[str, Any]:
    """A live trial's system attributes as it started (no storage read, no deprecation warning:
    Optuna deprecated them for users, and uses them for `failed_trial` and `retry_history`)."""
    attrs: Mapping[str, Any] = trial._cached_frozen_trial.system_attrs
    return attrs


def forget_finished(study: optuna.Study, trial_id: int) -> None:
    """Make the study's cache layer read trial `trial_id` again (it was revived: RUNNING)."""
    cache = study._storage
    if not isinstance(cache, optuna.storages._CachedStorage):
        return
    with cache._lock:
        known = cache._trial_id_to_study_id_and_number.get(trial_id)
        if known is None:
            return
        info = cache._studies[known[0]]
        info.trials[known[1]] = cache._backend.get_trial(trial_id)
        info.unfinished_trial_ids.add(trial_id)


def refresh_cached_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Update the copy of the trial that `optuna.Trial.user_attrs` reads, after a direct write."""
    trial._cached_frozen_trial.user_attrs.update(attrs)


def create_new_trial(
    storage: RDBStorage, study_id: int, template_trial: FrozenTrial | None
) -> FrozenTrial:
    """Optuna's own trial creation (what the public `create_new_trial` runs)."""
    return RDBStorage._create_new_trial(storage, study_id, template_trial)


def prepared_new_trial(
    storage: RDBStorage, study_id: int, template_trial: FrozenTrial | None, session: Any
) -> Any:
    """Add a new trial row (numbered, with the template's params and attrs) inside `session`."""
    return storage._get_prepared_new_trial(study_id, template_trial, session)


def set_attr_in_session(
    storage: RDBStorage, session: Any, model: Any, trial_id: int, key: str, value: Any
) -> None:
    """Upsert one trial attribute (user or system `model`) inside `session`, uncommitted."""
    storage._set_trial_attr_without_commit(session, model, trial_id, key, value)


def set_intermediate_value_in_session(
    storage: RDBStorage,
    session: Any,
    trial_id: int,
    step: int,
    value: float,
    *,
    before_new_step: Callable[[int], None],
) -> None:
    """Optuna's write of one intermediate value inside `session`, uncommitted, calling
    `before_new_step(study_id)` first when the trial has no value at `step` yet.

    A copy of `RDBStorage._set_trial_intermediate_value_without_commit` with that hook: asking
    "is this step new?" before Optuna's own write would read the trial and the step twice, on
    every reported step of every trial.
    """
    trial: Any = models.TrialModel.find_or_raise_by_id(trial_id, session)
    storage.check_trial_is_updatable(trial_id, trial.state)
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    row = models.TrialIntermediateValueModel.find_by_trial_and_step(trial, step, session)
    if row is None:
        before_new_step(trial.study_id)
        session.add(
            models.TrialIntermediateValueModel(
                trial_id=trial_id, step=step, intermediate_value=stored,
                intermediate_value_type=kind,
            )
        )  # fmt: skip
    else:
        row.intermediate_value, row.intermediate_value_type = stored, kind


def upsert_user_attrs(session: Any, dialect: str, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write user attributes of a trial into Optuna's table in one statement, replacing those
    it has (a retried trial carries copies of its crashed trial's), uncommitted."""
    table = models.TrialUserAttributeModel.__table__
    rows = [
        {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
    ]
    # The engine has imported its own dialect's module; the others are not imported at all.
    module: Any = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
    if dialect == "mysql":
        mysql = module.insert(table)
        insert: Any = mysql.on_duplicate_key_update(value_json=mysql.inserted.value_json)
    else:
        upsert = module.insert(table)
        insert = upsert.on_conflict_do_update(
            index_elements=["trial_id", "key"], set_={"value_json": upsert.excluded.value_json}
        )
    session.execute(insert, rows)


def stale_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """Optuna's own stale check: RUNNING trials whose heartbeat is older than the grace period."""
    return RDBStorage._get_stale_trial_ids(storage, study_id)


def frozen_trial(
    row: Any,
    params: Sequence[Any],
    values: Sequence[Any],
    steps: Sequence[Any],
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any],
) -> FrozenTrial:
    """What Optuna's `RDBStorage._build_frozen_trial_from_trial_model` makes of a trial, from
    plain rows: `row` of the trials table, `params` (name, stored value, distribution JSON) in
    `param_id` order, `values` (objective, stored value, type), `steps` (step, stored value,
    type), the attributes decoded."""
    by_objective = {
        objective: models.TrialValueModel.stored_repr_to_value(value, kind)
        for objective, value, kind in values
    }
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=[by_objective[i] for i in sorted(by_objective)] if by_objective else None,
        datetime_start=row.datetime_start,
        datetime_complete=row.datetime_complete,
        params={n: _distribution(d).to_external_repr(v) for n, v, d in params},
        distributions={n: _distribution(d) for n, _, d in params},
        user_attrs=dict(user_attrs),
        system_attrs=dict(system_attrs),
        intermediate_values={
            step: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(v, kind)
            for step, v, kind in steps
        },
        trial_id=row.trial_id,
    )


@functools.lru_cache(maxsize=1024)
def _distribution(text: str) -> optuna.distributions.BaseDistribution:
    # A study repeats a few distributions on every trial: parse each once. Nothing changes a
    # distribution in place, so trials may share one.
    return optuna.distributions.json_to_distribution(text)


def make_grpc_server(storage: BaseStorage, host: str, port: int, pool: Any) -> Any:
    """A started-able `grpc.Server` serving `storage` (optuna/storages/_grpc/server.py)."""
    from optuna.storages._grpc.server import make_server  # gRPC is imported only here

    return make_server(storage, host, port, pool)


class _TrialsStudy(optuna.Study):
    """A study whose trials are a given list (see `trials_study`)."""

    def __init__(
        self, name: str, directions: list[StudyDirection], trials: list[FrozenTrial]
    ) -> None:
        storage = InMemoryStorage()
        storage.create_new_study(directions, name)
        super().__init__(study_name=name, storage=storage)
        self._given = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._given if states is None else [t for t in self._given if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)


def trials_study(
    name: str, directions: list[StudyDirection], trials: list[FrozenTrial]
) -> optuna.Study:
    """A read-only study of `trials`, as they are (numbers kept, nothing copied or read again),
    for `optuna.visualization` and `optuna.importance`."""
    return _TrialsStudy(name, directions, trials)
