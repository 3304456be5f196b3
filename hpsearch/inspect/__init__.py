"""Reading a study without changing it: `status`, `best`, `export`, `report`, the dashboard.

`source` (a study opened read-only, read a page at a time, parameters as the user wrote them),
`facts` (the few columns of every trial `status` needs, read by SQL), `status` and `table` (the
numbers of `hpsearch status`, and their text), `best`, `export`, `report` (one offline HTML
file; `sampling`: the trials a big study's plots draw), `format` (the formats they share),
`dashboard` (optuna-dashboard in-process, read-only off loopback).
"""

from __future__ import annotations

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
