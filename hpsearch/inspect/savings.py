"""What pruning saved: one definition, for `status`, `advise` and `report` alike.

Saved epochs are summed over pruned trials: planned epochs minus epochs run. The share is
against what the finished trials would have trained had none been pruned: saved / (saved +
epochs every completed and pruned trial ran). *Planned* is the trial's `epochs` parameter, else
its `epochs` attribute, else the objective's fixed `epochs` option, else the largest last step
of a completed trial; *run* is its `epochs_run` attribute, else its last reported step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect.source import StudyView
from hpsearch.spec import TrainerObjective
from hpsearch.storage.attrs import EPOCHS_ATTR, EPOCHS_RUN_ATTR


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# A searched `epochs` parameter: what a trial planned.
EPOCHS_PARAM = "epochs"


def planned_epochs(param: Any, user_attrs: Mapping[str, Any]) -> float | None:
    """The epochs a trial planned: its `epochs` parameter, else its `epochs` attribute."""
    return _number(param) or _number(user_attrs.get(EPOCHS_ATTR))


def ran_epochs(user_attrs: Mapping[str, Any], last_step: int | None) -> float:
    """The epochs a trial ran: its `epochs_run` attribute, else its last reported step."""
    ran = _number(user_attrs.get(EPOCHS_RUN_ATTR))
    return ran if ran is not None else float(last_step or 0)


@dataclass
class Savings:
    """Accumulates finished trials (`add`); `as_json()` is what pruning saved."""

    @classmethod
    def for_view(cls, view: StudyView) -> Savings:
        objective = view.loaded.spec.objective
        unit = "epochs" if isinstance(objective, TrainerObjective) else "steps"
        return cls(planned_option=_number(objective.options.get("epochs")), unit=unit)

    planned_option: float | None = None  # the objective's fixed `epochs`
    unit: str = "epochs"  # "steps" outside the built-in trainer
    _pruned: list[tuple[float | None, float, int]] = field(default_factory=list)  # plan, run, n
    _complete_run: float = 0.0
    _max_complete_step: int | None = None

    def add(self, trial: FrozenTrial, params: Mapping[str, Any]) -> None:
        """One trial, with its user-facing parameters (`epochs` may be searched)."""
        attrs = trial.user_attrs
        self.add_run(
            trial.state,
            planned=planned_epochs(params.get(EPOCHS_PARAM), attrs),
            ran=ran_epochs(attrs, trial.last_step),
            last_step=trial.last_step,
        )

    def add_run(
        self,
        state: TrialState,
        *,
        planned: float | None,
        ran: float,
        last_step: int | None,
        count: int = 1,
    ) -> None:
        """`count` trials alike, as their state, planned and run epochs (`planned_epochs`,
        `ran_epochs`)."""
        if state == TrialState.COMPLETE:
            self._complete_run += ran * count
            if last_step is not None:
                self.add_complete_step(last_step)
        elif state == TrialState.PRUNED:
            self._pruned.append((planned or self.planned_option, ran, count))

    def add_complete_step(self, step: int) -> None:
        """A step a COMPLETE trial reported: the largest is what a pruned trial that says
        nothing of its plan had planned."""
        self._max_complete_step = max(self._max_complete_step or 0, step)

    def as_json(self) -> dict[str, Any]:
        saved = ran = planned = 0.0
        counted = 0
        for plan, run, n in self._pruned:
            plan = plan if plan is not None else self._max_complete_step
            if plan is None:
                continue
            counted += n
            ran, planned = ran + run * n, planned + plan * n
            saved += max(0.0, plan - run) * n
        total = saved + ran + self._complete_run
        return {
            "pruned_trials": sum(n for _, _, n in self._pruned),
            "counted_trials": counted,
            "epochs_run": ran,
            "epochs_planned": planned,
            "epochs_saved": saved,
            "epochs_without_pruning": total,
            "saved_share": saved / total if total else 0.0,
            "unit": self.unit,
        }


def describe(s: Mapping[str, Any]) -> str:
    """The one sentence `status`, `advise` and `report` print, from `Savings.as_json()`."""
    unit = s.get("unit", "epochs")
    if s["pruned_trials"] == 0:
        return "no trial pruned"
    if s["counted_trials"] == 0:
        return f"{s['pruned_trials']} pruned; planned {unit} unknown (no completed trial)"
    return (
        f"saved {s['epochs_saved']:,.0f} {unit} by stopping {s['counted_trials']} trial(s) "
        f"early: {s['saved_share']:.0%} of the {s['epochs_without_pruning']:,.0f} the finished "
        "trials would have trained unpruned"
    )
