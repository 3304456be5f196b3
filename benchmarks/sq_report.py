"""The search-quality figures: normalised regret at budgets, and trainings to random's result.

Normalised regret at a budget: (optimum - best) / (optimum - a random configuration), where
`best` is the value of the trial the user would pick among those finished within the budget,
`optimum` is the best of a large random sample (HPOBench: the whole table) and of every run,
and "a random configuration" is the mean value of random configurations. 0 is the optimum,
1 is no better than one random guess.

"Trainings to random@100": the task's target is random search's result after 100 full
trainings (median over seeds); a run's figure is the full trainings' worth of compute (epochs
trained / 52) at which its incumbent first reaches the target, infinity if never within the
run; per task the median over seeds, then the median over tasks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from sq_methods import Run

BUDGETS = (20, 50, 100)
Key = tuple[str, str]  # (problem, task)


def best_at(run: Run, budget: float, unit: int) -> float | None:
    """The incumbent's value once `budget` full trainings (x `unit` epochs) are spent."""
    spent, best = 0, None
    for (cost, _), incumbent in zip(run.trials, run.incumbents, strict=True):
        spent += cost
        if spent > budget * unit:
            break
        best = incumbent
    return best


def trainings_to(run: Run, target: float, unit: int) -> float:
    """Full trainings' worth of compute until the incumbent reaches `target`."""
    spent = 0
    for (cost, _), incumbent in zip(run.trials, run.incumbents, strict=True):
        spent += cost
        if incumbent is not None and incumbent >= target - 1e-9:
            return spent / unit
    return math.inf


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


class Figures:
    """All runs of one problem, with the references that normalise them."""

    def __init__(
        self, runs: Iterable[Run], references: dict[Key, tuple[float, float]], unit: int
    ) -> None:
        self.runs = list(runs)
        self.unit = unit
        self.optimum: dict[Key, float] = {}
        self.random_value: dict[Key, float] = {}
        for key, (sample_best, random_mean) in references.items():
            seen = [
                v
                for r in self.runs
                if (r.problem, r.task) == key
                for v in r.incumbents
                if v is not None
            ]
            self.optimum[key] = max([sample_best, *seen])
            self.random_value[key] = random_mean
        self.target: dict[Key, float] = {}
        for key in references:
            finals = [best_at(r, 100, unit) for r in self._select(key, "random")]
            found = [v for v in finals if v is not None]
            if found:
                self.target[key] = statistics.median(found)

    def _select(self, key: Key, method: str) -> list[Run]:
        return [r for r in self.runs if (r.problem, r.task) == key and r.method == method]

    def regret(self, run: Run, budget: float) -> float:
        key = (run.problem, run.task)
        best = best_at(run, budget, self.unit)
        if best is None:
            return 1.0
        span = self.optimum[key] - self.random_value[key]
        return (self.optimum[key] - best) / span if span > 0 else 0.0

    def task_trainings(self, key: Key, method: str) -> float:
        """Median over seeds of the trainings to random@100 on one task."""
        if key not in self.target:
            return math.nan
        return _median(
            [trainings_to(r, self.target[key], self.unit) for r in self._select(key, method)]
        )

    def summary(self, tasks: Sequence[str], methods: Sequence[str], problem: str) -> str:
        """One markdown table: a row per method over these tasks."""
        head = [f"regret@{b}" for b in BUDGETS]
        lines = [
            "| method | " + " | ".join(head) + " | trainings to random@100 | trials started "
            "(completed) per run | CPU s per run |",
            "| --- |" + " ---: |" * (len(head) + 3),
        ]
        for method in methods:
            runs = [r for r in self.runs if r.task in tasks and r.method == method]
            runs = [r for r in runs if r.problem == problem]
            if not runs:
                continue
            regrets = [statistics.fmean(self.regret(r, b) for r in runs) for b in BUDGETS]
            per_task = [self.task_trainings((problem, t), method) for t in tasks]
            started = statistics.fmean(len(r.trials) for r in runs)
            completed = statistics.fmean(sum(v is not None for _, v in r.trials) for r in runs)
            seconds = statistics.fmean(r.seconds for r in runs)
            cells = [f"{x:.3f}" for x in regrets]
            cells += [_trainings(_median([x for x in per_task if not math.isnan(x)]))]
            cells += [f"{started:.0f} ({completed:.0f})", f"{seconds:.1f}"]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def per_task(self, tasks: Sequence[str], methods: Sequence[str], problem: str) -> str:
        """Trainings to random@100 per task (median over seeds), and regret@20 per task."""
        lines = [
            "| method | " + " | ".join(tasks) + " |",
            "| --- |" + " ---: |" * len(tasks),
        ]
        for method in methods:
            cells = []
            for task in tasks:
                runs = self._select((problem, task), method)
                if not runs:
                    cells.append("-")
                    continue
                r20 = statistics.fmean(self.regret(r, 20) for r in runs)
                cells.append(
                    f"{_trainings(self.task_trainings((problem, task), method))} / {r20:.2f}"
                )
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _trainings(value: float) -> str:
    if math.isnan(value):
        return "-"
    return ">100" if math.isinf(value) else f"{value:.1f}"
