"""Writing a trial's user attributes: all of them in one transaction where the storage can."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.storage import ResilientRDBStorage
from hpsearch.storage.optuna_compat import refresh_cached_user_attrs, storage_backend, trial_id


def record(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set the attributes that differ from what the trial holds.

    Each trial records about ten attributes (provenance, seed, batch size, device); on a server
    database a commit is the dominant cost of a write, so they go in one.
    """
    missing = {k: v for k, v in attrs.items() if trial.user_attrs.get(k) != v}
    if not missing:
        return
    backend = storage_backend(trial.storage)
    if isinstance(backend, ResilientRDBStorage):
        backend.set_trial_user_attrs(trial_id(trial), missing)
        refresh_cached_user_attrs(trial, missing)
        return
    for key, value in missing.items():
        trial.set_user_attr(key, value)
