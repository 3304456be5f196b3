"""The study-wide budget, in one home: what counts (`rules`) and the row that enforces it
(`ledger`).

`rules` says what a trial, a retry, an epoch, a GPU-hour and a reached target count for, and
how a run's flags override the file's budget (`for_run`, used by the CLI and the Python API
alike). `ledger` is the SQL row every worker claims from, in the transaction that starts each
trial (`ResilientRDBStorage` calls `claim_in` and `claim_epochs_in`), so the budget is exact
however many workers share the study. Imports only the spec and SQLAlchemy: the storage sits
above it.
"""

from __future__ import annotations

from hpsearch.budget.ledger import Ledger, Retrying, ledger_table
from hpsearch.budget.rules import (
    RETRY_HISTORY,
    BudgetSpent,
    LedgerState,
    Limits,
    counts_as_new_trial,
    for_run,
    gpu_seconds,
    target_reached,
    trials_started,
)

__all__ = [
    "RETRY_HISTORY",
    "BudgetSpent",
    "Ledger",
    "LedgerState",
    "Limits",
    "Retrying",
    "counts_as_new_trial",
    "for_run",
    "gpu_seconds",
    "ledger_table",
    "target_reached",
    "trials_started",
]
