"""hpsearch: hyperparameter search for deep learning on GPU fleets, built on Optuna.

The Python API (docs/python-api.md): `load` a study file, `create_study` (create or join it as
an `optuna.Study`), `run` it in this process. The names are imported on first use, so
`import hpsearch` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpsearch.version import __version__

if TYPE_CHECKING:
    from hpsearch.api import create_study, load, run, storage_url
    from hpsearch.budget import BudgetSpent
    from hpsearch.errors import HpsearchError, SpecError, StorageError
    from hpsearch.spec import LoadedSpec, StudySpec

__all__ = [
    "BudgetSpent",
    "HpsearchError",
    "LoadedSpec",
    "SpecError",
    "StorageError",
    "StudySpec",
    "__version__",
    "create_study",
    "load",
    "run",
    "storage_url",
]

_HOMES = {
    "create_study": "hpsearch.api",
    "load": "hpsearch.api",
    "run": "hpsearch.api",
    "storage_url": "hpsearch.api",
    "HpsearchError": "hpsearch.errors",
    "SpecError": "hpsearch.errors",
    "StorageError": "hpsearch.errors",
    "LoadedSpec": "hpsearch.spec",
    "StudySpec": "hpsearch.spec",
    "BudgetSpent": "hpsearch.budget",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
