"""Every metric an objective reports, kept with its trial: final values and per-step curves.

The study's metric is Optuna's (the trial's value and intermediate values). The others (the
trainer's train_loss, val_loss, balanced accuracy, learning rate, images/s; whatever else a
function returns or a command prints) are written once, when the trial ends, however it ends:
- each final value as a user attribute of its own name, which optuna-dashboard lists;
- the curves in one user attribute, `hpsearch:curves`:
  `{"step": [1, 2, 3], "val_loss": [0.9, 0.7, 0.6], ...}`, which `export` and `report` read.
Values keep 6 significant digits, and a curve too long for one database text field (MySQL's
TEXT holds 64 KiB) keeps evenly spaced steps, its last one included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpsearch.storage.attrs import CURVES_ATTR

_MAX_CHARS = 50_000
_IMPLIED = frozenset({"epoch", "step"})  # the step itself, under another name


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return float(f"{number:.6g}") if math.isfinite(number) else None


class MetricLog:
    """The metrics one trial reported, step by step (see the module docstring)."""

    def __init__(self, study_metrics: Sequence[str]) -> None:
        self._skip = frozenset(study_metrics)  # Optuna keeps these already
        self._steps: list[int] = []
        self._curves: dict[str, list[float | None]] = {}

    def add(self, reported: Any, step: int) -> None:
        """One report: a dict of metrics (a bare number is the study's metric, kept already)."""
        if not isinstance(reported, Mapping):
            return
        self._steps.append(int(step))
        for key, value in reported.items():
            name = str(key)
            if name in self._skip or name in _IMPLIED:
                continue
            curve = self._curves.setdefault(name, [None] * (len(self._steps) - 1))
            curve.append(_number(value))
        for curve in self._curves.values():  # a metric this step did not report
            curve.extend([None] * (len(self._steps) - len(curve)))

    def attrs(self, result: Any, present: Mapping[str, Any]) -> dict[str, Any]:
        """The user attributes to write when the trial ends.

        `result`: what the objective returned (its final metrics, for a dict); `present`: the
        trial's attributes already, which a metric of the same name never overwrites.
        """
        finals: dict[str, Any] = {n: c[-1] for n, c in self._curves.items() if c[-1] is not None}
        if isinstance(result, Mapping):
            for key, value in result.items():
                number = _number(value)
                if number is not None and str(key) not in self._skip | _IMPLIED:
                    finals[str(key)] = number
        out = {k: v for k, v in finals.items() if k not in present or present[k] == v}
        if self._curves:
            out[CURVES_ATTR] = self._compact()
        return out

    def _compact(self) -> dict[str, list[Any]]:
        keep = list(range(len(self._steps)))
        while True:
            curves: dict[str, list[Any]] = {"step": [self._steps[i] for i in keep]}
            curves.update({n: [c[i] for i in keep] for n, c in self._curves.items()})
            if len(keep) <= 2 or len(json.dumps(curves)) <= _MAX_CHARS:
                return curves
            keep = keep[::2] if keep[::2][-1] == keep[-1] else [*keep[::2], keep[-1]]


def read_curves(user_attrs: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A trial's curves as `MetricLog` stored them; {} for a trial without any."""
    curves = user_attrs.get(CURVES_ATTR)
    return dict(curves) if isinstance(curves, Mapping) else {}
