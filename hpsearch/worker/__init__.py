"""The worker: the process that runs a study's trials, on one GPU (or the CPU) of one machine.

`loop` (`run_worker`: one trial after another within the study-wide budget, stopping cleanly on
SIGTERM), `retry_policy` (a crashed or stopped worker's trial runs again, exactly once),
`budget` (the study-wide ledger that makes `n_trials`, `timeout` and `gpu_hours` exact across
workers), `launcher` (several local worker processes, one per GPU), `provenance` (what each
trial records about where it ran).
"""

from __future__ import annotations

from hpsearch.worker.budget import Ledger, LedgerState, Limits, ledger_table
from hpsearch.worker.launcher import launch, parse_gpus
from hpsearch.worker.loop import STARTUP_WAIT_SECONDS, RunOptions, WorkerReport, run_worker
from hpsearch.worker.retry_policy import RetryPolicy

__all__ = [
    "STARTUP_WAIT_SECONDS",
    "Ledger",
    "LedgerState",
    "Limits",
    "RetryPolicy",
    "RunOptions",
    "WorkerReport",
    "launch",
    "ledger_table",
    "parse_gpus",
    "run_worker",
]
