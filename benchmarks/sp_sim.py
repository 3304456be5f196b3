"""W asynchronous workers on one study, simulated in time (for benchmarks/search_parallel.py).

Each worker has its own sampler and pruner, built from the method's study file as `hpsearch run`
builds them (`sq_methods.build_worker`: the first worker is the study's creator and keeps the
seed, the others get the salted seed of a joining worker), and its own `optuna.Study` object on
ONE shared in-memory storage: what W `hpsearch run` processes see through a database, other
workers' trials RUNNING with the values they reported so far.

Time is simulated: every epoch of a trial takes time (1 unit, or what LCBench's surrogate
predicts for that configuration, scaled so that a typical configuration's epoch is 1 unit).
Events are processed in time order (ties by the order they were scheduled): at the end of an
epoch the worker reports the value and asks `should_prune`; when its trial ends (completed or
pruned) it tells the study and asks for the next trial at once, unless the fleet's compute is
spent. With one worker this is exactly `sq_methods.run_lcbench` (same seeds, same trials).

Compute is what the fleet trained: epochs (constant cost) or epoch-times (surrogate cost), both
in units where a full training of a typical configuration is 52.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from sq_methods import Run, build_worker
from sq_problems import EPOCHS, LCBench

from hpsearch.spec import StudySpec
from hpsearch.study import suggest

COST_MODELS = ("constant", "surrogate")


@dataclass
class Problem:
    """One LCBench task as the fleet sees it: its space (flat or conditional) and cost model."""

    bench: LCBench
    task: str
    conditional: bool = False
    cost: str = "constant"
    _scale: float = 0.0

    def space(self) -> dict[str, dict[str, Any]]:
        return self.bench.conditional_space() if self.conditional else self.bench.study_space()

    def evaluate(self, values: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(the curve, each epoch's duration) of a trial's values."""
        config = self.bench.config(values)
        curve = self.bench.curves(self.task, [config])[0]
        if self.cost == "constant":
            return curve, np.ones(EPOCHS)
        if not self._scale:
            # A typical configuration's epoch is 1 unit: the median over a fixed random sample.
            sample = self.bench.random_configs(np.random.default_rng(0), 64)
            self._scale = float(
                np.median([self.bench.epoch_times(self.task, c).mean() for c in sample])
            )
        return curve, self.bench.epoch_times(self.task, config) / self._scale


@dataclass
class _Worker:
    study: optuna.Study
    spec: StudySpec
    trial: optuna.Trial | None = None
    curve: np.ndarray = field(default_factory=lambda: np.empty(0))
    durations: np.ndarray = field(default_factory=lambda: np.empty(0))
    epoch: int = 0  # epochs this trial has trained


class Fleet:
    """The simulation of one run: `workers` workers until `trainings` x 52 of compute."""

    def __init__(
        self, problem: Problem, method: str, seed: int, workers: int, trainings: int
    ) -> None:
        self.problem = problem
        self.budget = trainings * EPOCHS
        self.spent = 0.0  # compute trained by the fleet
        self.recorded = 0.0  # compute already charged to a recorded trial
        self.best: float | None = None
        self._events: list[tuple[float, int, int]] = []
        self._order = 0
        variant = "lcbench-cond" if problem.conditional else "lcbench"
        self.run = Run(f"{variant}/{problem.cost}/w{workers}", problem.task, method, seed)
        storage = optuna.storages.InMemoryStorage()
        self.workers: list[_Worker] = []
        space = problem.space()
        for number in range(workers):
            spec, sampler, pruner = build_worker(method, space, seed, number)
            if number == 0:
                study = optuna.create_study(
                    storage=storage, study_name="fleet", direction="maximize",
                    sampler=sampler, pruner=pruner,
                )  # fmt: skip
            else:
                study = optuna.load_study(
                    study_name="fleet", storage=storage, sampler=sampler, pruner=pruner
                )
            self.workers.append(_Worker(study, spec))

    def simulate(self) -> Run:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for number in range(len(self.workers)):
                self._start(number, 0.0)
            while self._events:
                now, _, number = heapq.heappop(self._events)
                self._epoch_done(number, now)
        return self.run

    def _schedule(self, at: float, number: int) -> None:
        heapq.heappush(self._events, (at, self._order, number))
        self._order += 1

    def _start(self, number: int, now: float) -> None:
        if self.spent >= self.budget:
            return  # the fleet's compute is spent: this worker stops asking
        worker = self.workers[number]
        trial = worker.study.ask()
        values = suggest(trial, worker.spec)
        trial.set_user_attr("epochs", EPOCHS)  # what the trainer records before it trains
        worker.trial, worker.epoch = trial, 0
        worker.curve, worker.durations = self.problem.evaluate(values)
        self._schedule(now + float(worker.durations[0]), number)

    def _epoch_done(self, number: int, now: float) -> None:
        worker = self.workers[number]
        trial = worker.trial
        assert trial is not None
        self.spent += float(worker.durations[worker.epoch])
        worker.epoch += 1
        value = float(worker.curve[worker.epoch - 1])
        trial.report(value, worker.epoch)
        if trial.should_prune():
            worker.study.tell(trial, state=TrialState.PRUNED)
            self._record(None, now)
        elif worker.epoch == EPOCHS:
            worker.study.tell(trial, value)
            self._record(value, now)
        else:
            self._schedule(now + float(worker.durations[worker.epoch]), number)
            return
        self._start(number, now)

    def _record(self, value: float | None, now: float) -> None:
        if value is not None and (self.best is None or value > self.best):
            self.best = value
        self.run.trials.append((self.spent - self.recorded, value))
        self.run.incumbents.append(self.best)
        self.run.times.append(now)
        self.recorded = self.spent


def simulate(problem: Problem, method: str, seed: int, workers: int, trainings: int) -> Run:
    """One method on one problem with `workers` workers and paired seed `seed`."""
    return Fleet(problem, method, seed, workers, trainings).simulate()
