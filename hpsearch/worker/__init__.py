"""The worker: the process that runs a study's trials, on one GPU (or the CPU) of one machine.

`loop` (`run_worker`: one trial after another within the study-wide budget, stopping cleanly on
SIGTERM), `retry_policy` (a crashed or stopped worker's trial runs again, exactly once),
`session` (`StudySession`: the study, its budget, heartbeats and stop checks behind one object,
for the loop and the Python API), `stopping` (a worker's own reasons to stop, and the study's
stop record), `launcher` (several local worker processes, one per GPU), `provenance` (what each
trial records about where it ran).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.worker.launcher import launch, parse_gpus
    from hpsearch.worker.loop import STARTUP_WAIT_SECONDS, RunOptions, WorkerReport, run_worker
    from hpsearch.worker.retry_policy import RetryPolicy
    from hpsearch.worker.session import StudySession, worker_name

# Each name's module, imported on first use: `status` reads `provenance` without paying for the
# loop, the launcher and the batch-size fitter they import.
_EXPORTS = {
    "STARTUP_WAIT_SECONDS": "loop",
    "RetryPolicy": "retry_policy",
    "RunOptions": "loop",
    "StudySession": "session",
    "WorkerReport": "loop",
    "launch": "launcher",
    "parse_gpus": "launcher",
    "run_worker": "loop",
    "worker_name": "session",
}
__all__ = [
    "STARTUP_WAIT_SECONDS",
    "RetryPolicy",
    "RunOptions",
    "StudySession",
    "WorkerReport",
    "launch",
    "parse_gpus",
    "run_worker",
    "worker_name",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
