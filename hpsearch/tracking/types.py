"""What every tracker is told of a trial: its name and readable parameters, then its end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TrialState = Literal["COMPLETE", "PRUNED", "FAIL"]


@dataclass(frozen=True)
class TrialInfo:
    """One trial as trackers name it. `tags` hold no secret: the worker, host and versions."""

    study: str
    number: int
    params: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)


class Tracker(Protocol):
    """One experiment tracker (see the module docstring)."""

    def start(self, trial: TrialInfo) -> None: ...

    def step(self, trial: TrialInfo, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(
        self,
        trial: TrialInfo,
        state: TrialState,
        values: Sequence[float] | None,
        checkpoint: str | None,
    ) -> None: ...
