"""Reading a study without changing it: `status`, `best`, `export`, `report`, the dashboard.

`source` (a study opened read-only, read a page at a time, parameters as the user wrote them),
`facts` (the counts, sums and RUNNING trials `status` needs, by SQL aggregates), `status` and
`table` (the numbers of `hpsearch status`, and their text), `best`, `export`, `report` (one
offline HTML file; `sampling`: the trials a big study's plots draw), `format` (the formats they
share), `dashboard` (optuna-dashboard in-process, read-only off loopback).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.inspect.best import best_trials
    from hpsearch.inspect.dashboard import (
        DashboardServer,
        ReadOnlyError,
        ReadOnlyStorage,
        is_loopback,
        make_app,
        read_only_for,
    )
    from hpsearch.inspect.export import FORMATS, export, format_for
    from hpsearch.inspect.source import StudyView, open_view
    from hpsearch.inspect.status import Status, collect

# Each name's module, imported on first use: `best` does not pay for the dashboard and `status`.
_EXPORTS = {
    "FORMATS": "export",
    "DashboardServer": "dashboard",
    "ReadOnlyError": "dashboard",
    "ReadOnlyStorage": "dashboard",
    "Status": "status",
    "StudyView": "source",
    "best_trials": "best",
    "collect": "status",
    "export": "export",
    "format_for": "export",
    "is_loopback": "dashboard",
    "make_app": "dashboard",
    "open_view": "source",
    "read_only_for": "dashboard",
}
__all__ = [
    "FORMATS",
    "DashboardServer",
    "ReadOnlyError",
    "ReadOnlyStorage",
    "Status",
    "StudyView",
    "best_trials",
    "collect",
    "export",
    "format_for",
    "is_loopback",
    "make_app",
    "open_view",
    "read_only_for",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
