"""`hpsearch init --budget`: full trainings (`20`) or device time (`8h`, `8gpu-hours`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import HpsearchError
from hpsearch.spec import parse_duration

DEFAULT_BUDGET = "20"
_HOURS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:gpu[- ]?hours?|gpu[- ]?h|gpuh)", re.I)


@dataclass(frozen=True)
class BudgetChoice:
    """What the user can spend: a number of full trainings, or seconds of device time."""

    text: str
    trainings: int | None = None
    seconds: float | None = None

    def describe(self) -> str:
        if self.trainings is not None:
            return f"{self.trainings} full trainings"
        assert self.seconds is not None
        return f"{self.seconds / 3600:.3g} device-hours"


def parse_budget(text: str) -> BudgetChoice:
    """`20` (full trainings), `8h` / `90m` / `1h30m` / `2d`, or `8gpu-hours` (device time)."""
    value = text.strip()
    if value.isdigit():
        if int(value) < 1:
            raise HpsearchError(
                f"--budget must be at least 1 training (or a time such as 8h), but got {text!r}"
            )
        return BudgetChoice(text, trainings=int(value))
    hours = _HOURS.fullmatch(value)
    if hours:
        return BudgetChoice(text, seconds=float(hours.group(1)) * 3600)
    if re.fullmatch(r"[\d.\s]+[smhd].*", value):
        try:
            return BudgetChoice(text, seconds=parse_duration(value))
        except ValueError:
            pass
    raise HpsearchError(
        f"--budget must be a number of full trainings (20) or device time (8h, 90m, 1h30m, "
        f"8gpu-hours), but got {text!r}"
    )


def budget_section(choice: BudgetChoice) -> tuple[dict[str, Any], str]:
    """The study file's `budget:` for the choice, and the comment that explains it.

    The one place that turns `--budget` into budget keys: a study-wide epoch budget
    (`budget: {epochs: N}`) can replace `n_trials` here once the trainer counts epochs.
    """
    if choice.trainings is not None:
        return {"n_trials": choice.trainings}, (
            f"--budget {choice.text}: {choice.trainings} trainings; pruned ones stop early"
        )
    assert choice.seconds is not None
    hours = round(choice.seconds / 3600, 4)
    return {"gpu_hours": hours}, (
        f"--budget {choice.text}: device time summed over all workers (a CPU counts as one)"
    )
