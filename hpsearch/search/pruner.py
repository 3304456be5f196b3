"""`AutoPruner`: stops a trial early only when the evidence says it will not win."""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.study import Study
from optuna.trial import FrozenTrial


class AutoPruner(BasePruner):
    """Median pruning after a warm-up: the placeholder until the benchmark decides."""

    def __init__(self) -> None:
        self._inner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        return self._inner.prune(study, trial)
