"""`hpsearch best`: the best trials' parameters as YAML to paste under `enqueue:`, with metrics.

Single objective: the `top` best completed trials. Several objectives: the Pareto front (trials
no other trial beats on every objective), sorted by the first objective.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import yaml
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect.format import fmt_duration, fmt_value
from hpsearch.inspect.source import (
    PROVENANCE_ATTRS,
    StudyView,
    duration_s,
    is_curve_attr,
    pareto_front,
)
from hpsearch.storage.attrs import CHECKPOINT_ATTR, WORKER_ATTR
from hpsearch.storage.optuna_compat import trial_id


def best_trials(
    view: StudyView, *, top: int | None = None, trials: list[FrozenTrial] | None = None
) -> tuple[list[FrozenTrial], int]:
    """(the best trials, best first; the number of completed trials they were chosen from).

    `trials`: the study's trials when the caller has read them already (`report`).
    """
    n_complete = 0
    if trials is None and not view.multi_objective and (top or 1) == 1:
        # Optuna's best-trial query and a SQL count: a big study is not read trial by trial.
        count = view.count(TrialState.COMPLETE)
        if count is not None:
            if count == 0:
                return [], 0
            return [view.storage.get_best_trial(view.study_id)], count
    if not view.multi_objective:
        sign = 1.0 if view.directions[0] == StudyDirection.MINIMIZE else -1.0
        keep = top or 1
        # A bounded heap: only `top` trials are held however large the study.
        heap: list[tuple[float, int, FrozenTrial]] = []
        for trial in _every(view, trials):
            if trial.state != TrialState.COMPLETE or trial.values is None:
                continue
            n_complete += 1
            item = (-sign * trial.values[0], -trial.number, trial)
            if len(heap) < keep:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
        ranked = sorted(heap, key=lambda i: (-i[0], -i[1]))
        return [t for _, _, t in ranked], n_complete
    points: list[tuple[int, list[float]]] = []
    known: dict[int, FrozenTrial] = {}
    for trial in _every(view, trials):
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            n_complete += 1
            points.append((trial_id(trial), list(trial.values)))
            if trials is not None:
                known[trial_id(trial)] = trial  # held already; a streamed one is not kept
    front = [known.get(key) or view.trial(key) for key in pareto_front(points, view.directions)]
    front.sort(key=lambda t: (_signed(t, view), t.number))
    return (front[:top] if top else front), n_complete


def _every(view: StudyView, trials: list[FrozenTrial] | None) -> Iterable[FrozenTrial]:
    return view.trials() if trials is None else trials


def _signed(trial: FrozenTrial, view: StudyView) -> float:
    assert trial.values is not None
    value = trial.values[0]
    return value if view.directions[0] == StudyDirection.MINIMIZE else -value


def render(
    view: StudyView, trials: list[FrozenTrial], n_complete: int, *, keep: int | None = None
) -> str:
    """YAML: a commented header, then one `- name: value` entry per trial, best first.

    `keep`: the trainer's `keep_checkpoints`; trials ranked below it have none any more.
    """
    goal = ", ".join(
        f"{d.name.lower()} {m}" for d, m in zip(view.directions, view.metrics, strict=True)
    )
    if not trials:
        return f"# study {view.name}: no completed trial yet ({goal})\n[]\n"
    if view.multi_objective:
        what = f"Pareto front ({len(trials)} of {n_complete} completed trials)"
    else:
        what = f"best {len(trials)} of {n_complete} completed trials"
    lines = [
        f"# study {view.name}, {goal}: {what}",
        "# paste the entries below under `enqueue:` in the study file to run them again",
    ]
    for rank, trial in enumerate(trials):
        assert trial.values is not None
        metrics = ", ".join(
            f"{m} = {fmt_value(v)}" for m, v in zip(view.metrics, trial.values, strict=True)
        )
        took = duration_s(trial)
        where = trial.user_attrs.get(WORKER_ATTR)
        ran = f" in {fmt_duration(took)}" if took is not None else ""
        ran += f" on {where}" if isinstance(where, str) else ""
        lines += ["", f"# trial {trial.number}{ran}: {metrics}"]
        checkpoint = trial.user_attrs.get(CHECKPOINT_ATTR)
        if keep is not None and rank >= keep:
            checkpoint = f"not kept (only the best {keep} are: keep_checkpoints)"
        lines.append(f"# checkpoint: {checkpoint if checkpoint else 'none recorded'}")
        attrs = _shown_attrs(trial, view)
        if attrs:
            lines.append(f"# attrs: {attrs}")
        params: dict[str, Any] = view.user_params(trial.params)
        entry = yaml.safe_dump([params], sort_keys=False, default_flow_style=False)
        lines.append(entry.rstrip("\n") if params else "- {}")
    return "\n".join(lines) + "\n"


def _shown_attrs(trial: FrozenTrial, view: StudyView) -> str:
    """The trial's other attributes, none under a parameter's name: the parameter below is that
    name's one figure (a metric `lr`, the schedule's last learning rate, read as a second value
    of the parameter `lr`; an attribute `epochs=6` only repeated it)."""
    shown = []
    params = view.user_params(trial.params)
    for key, value in trial.user_attrs.items():
        if key in PROVENANCE_ATTRS or key == CHECKPOINT_ATTR or is_curve_attr(key, view.metrics):
            continue
        if key in params:
            continue
        if isinstance(value, bool | int | float | str) and len(str(value)) <= 80:
            shown.append(f"{key}={fmt_value(value)}")
    return ", ".join(shown)
