"""When a worker stops on its own: trials failing in a row, an exhausted grid."""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage import RETRY_ATTR


class Failures:
    """Trials of this worker that failed in a row: past `limit`, the study cannot succeed here.

    Counted per worker: one machine with a broken driver or a missing package stops, the rest
    of the fleet goes on. A trial failed because its worker was stopped or crashed does not
    count (it is retried), an out-of-memory trial does (its limit is lowered each time).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reasons: list[str] = []
        self.gave_up: str | None = None

    def add(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.reasons.clear()
            return
        if trial.system_attrs.get(RETRY_ATTR) is not None:
            return
        reason = str(trial.user_attrs.get("fail_reason") or "no reason recorded")
        self.reasons.append(reason.splitlines()[0][:200])
        if len(self.reasons) >= self.limit:
            commonest, n = Counter(self.reasons).most_common(1)[0]
            self.gave_up = (
                f"stopped after {len(self.reasons)} failed trials in a row (budget.max_failures:"
                f" {self.limit}); commonest reason ({n}x): {commonest}; fix it and run again"
            )


def grid_exhausted(study: optuna.Study) -> str | None:
    """Why a grid study is done: every point of its grid has run (or is running)."""
    sampler = study.sampler
    if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
        return "every point of the grid has run"
    return None
