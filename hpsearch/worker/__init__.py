"""The worker: the process that runs a study's trials, on one GPU (or the CPU) of one machine.

`loop` (`run_worker`: one trial after another within the study-wide budget, stopping cleanly on
SIGTERM), `retry_policy` (a crashed or stopped worker's trial runs again, exactly once),
`session` (`StudySession`: the study, its budget, heartbeats and stop checks behind one object,
for the loop and the Python API), `stopping` (a worker's own reasons to stop, and the study's
stop record), `launcher` (several local worker processes, one per GPU), `provenance` (what each
trial records about where it ran).
"""

from __future__ import annotations

from hpsearch.worker.launcher import launch, parse_gpus
from hpsearch.worker.loop import STARTUP_WAIT_SECONDS, RunOptions, WorkerReport, run_worker
from hpsearch.worker.retry_policy import RetryPolicy
from hpsearch.worker.session import StudySession, worker_name

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
