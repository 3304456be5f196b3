"""The storage's side of the study-wide budget: what a trial's transactions claim from.

The ledger itself is the worker's (`worker.budget.Ledger`); the storage only claims in the
transactions it runs, through this protocol, so nothing here depends on the worker.
"""

from __future__ import annotations

from typing import Any, Protocol


class BudgetSpent(Exception):
    """No slot left for a new trial, or no epoch left to record, in this study."""

    def __init__(self, study_id: int, what: str = "budget") -> None:
        super().__init__(f"the {what} of study {study_id} is spent")
        self.study_id = study_id


class BudgetClaim(Protocol):
    """A study-wide budget that a trial's transactions claim from (`worker.budget.Ledger`)."""

    def claim_in(self, session: Any, *, count: bool) -> bool:
        """Claim a trial's slot inside `session`'s transaction; False when the budget is spent."""
        ...

    def claim_epochs_in(self, session: Any, epochs: int) -> bool:
        """Claim trained epochs inside `session`'s transaction; False when they are spent."""
        ...

    def spent(self) -> BudgetSpent:
        """The exception `ask()` raises when no slot is left."""
        ...

    def bind(self, engine: Any) -> None:
        """Use `engine` from now on (the storage's, after it was unpickled)."""
        ...
