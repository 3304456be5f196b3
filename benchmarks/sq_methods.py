"""The methods of the search-quality benchmark, and one run of a method on a problem.

Every method is built the way a user gets it: a study file (YAML) read by `hpsearch.spec`, its
sampler and pruner from `hpsearch.study.algorithms`, parameters suggested by
`hpsearch.study.suggest`. `default` is a file that names no sampler and no pruner; `auto` builds
`hpsearch.search.AutoSampler` / `AutoPruner` directly (the same thing once the spec's default
is `auto`; kept so the harness measures the new default on a branch whose spec still says TPE).
Runs use Optuna's in-memory storage: the search is measured here, not the database.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from sq_problems import EPOCHS, LCBench, Tabular

from hpsearch.spec import PowerOfTwoParam, StudySpec, load_spec
from hpsearch.study import EXPONENT, VALUE, PowersOfTwo, suggest
from hpsearch.study.algorithms import make_pruner, make_sampler


# `--powers exponent`: power-of-two parameters stored as `log2_<name>` exponents, as studies
# made before hpsearch stored the values (`--powers value`, sampled as exponents) were.
def _encoding() -> str:
    return EXPONENT if os.environ.get("HPSEARCH_SQ_POWERS") == "exponent" else VALUE


# method -> (sampler, pruner) as a study file writes them; None: the key is left out.
METHODS: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
    "random": ({"type": "random"}, {"type": "none"}),
    "tpe": ({"type": "tpe"}, {"type": "none"}),
    "tpe+median": ({"type": "tpe"}, {"type": "median"}),
    "tpe+hyperband": ({"type": "tpe"}, {"type": "hyperband"}),
    "tpe+sha": ({"type": "tpe"}, {"type": "successive_halving"}),
    "gp": ({"type": "gp"}, {"type": "none"}),
    "default": (None, None),
    "auto": ({"type": "auto"}, {"type": "auto"}),
    # for tuning: the two halves of the default apart
    "auto-sampler": ({"type": "auto"}, {"type": "none"}),
    "gp+autopruner": ({"type": "gp"}, {"type": "auto"}),
}


@dataclass
class Run:
    """One method on one task with one seed: what each trial cost and found, in order."""

    problem: str
    task: str
    method: str
    seed: int
    # per trial: (epochs charged, value if COMPLETE else None); tabular trials cost 1 "epoch".
    # With several workers (benchmarks/sp_sim.py): per trial that ends, the compute spent by
    # the whole fleet since the previous one ended, so that the running sum is the compute
    # spent when each incumbent was known.
    trials: list[tuple[float, float | None]] = field(default_factory=list)
    # per trial: the value of the best trial so far (what the user would pick), None before one
    incumbents: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    # per trial, several workers only: the simulated wall-clock time when it ended
    times: list[float] = field(default_factory=list)


def study_file(method: str, space: dict[str, Any], direction: str, folder: Path) -> Path:
    """Write the study file for `method`: names no sampler/pruner where the method says so."""
    sampler, pruner = METHODS[method]
    document: dict[str, Any] = {
        "name": f"sq-{method}",
        "direction": direction,
        "metric": "val_accuracy",
        "objective": {"function": "sq_objective.py:run"},  # never imported: runs in-process
        "search_space": space,
    }
    if sampler is not None:
        document["sampler"] = sampler
    if pruner is not None:
        document["pruner"] = pruner
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _seeded(spec: StudySpec, seed: int) -> StudySpec:
    # Paired seeds: the file's sampler, whatever it defaults to, with this run's seed.
    if hasattr(spec.sampler, "seed"):
        spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": seed})})
    return spec


def build(
    method: str, space: dict[str, Any], direction: str, seed: int
) -> tuple[StudySpec, optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The spec, sampler and pruner a user gets from this method's study file."""
    sampler_spec, pruner_spec = METHODS[method]
    if "auto" in (sampler_spec or {}).get("type", "") + (pruner_spec or {}).get("type", ""):
        from hpsearch.search import AutoPruner, AutoSampler

        # Built directly: the spec may not know `type: auto` yet. The file still gives the space.
        with tempfile.TemporaryDirectory() as tmp:
            spec = load_spec(study_file("default", space, direction, Path(tmp))).spec
        auto_sampler = sampler_spec is not None and sampler_spec["type"] == "auto"
        sampler: optuna.samplers.BaseSampler = (
            AutoSampler(seed=seed) if auto_sampler else optuna.samplers.GPSampler(seed=seed)
        )
        auto_pruner = pruner_spec is not None and pruner_spec["type"] == "auto"
        pruner = AutoPruner() if auto_pruner else optuna.pruners.NopPruner()
        powers = [n for n, p in spec.search_space.items() if isinstance(p, PowerOfTwoParam)]
        if powers and _encoding() == VALUE:
            sampler = PowersOfTwo(sampler, powers)  # as make_sampler does
        return spec, sampler, pruner
    with tempfile.TemporaryDirectory() as tmp:
        spec = _seeded(load_spec(study_file(method, space, direction, Path(tmp))).spec, seed)
    return spec, make_sampler(spec, encoding=_encoding()), make_pruner(spec.pruner)


def build_worker(
    method: str, space: dict[str, Any], seed: int, worker: int
) -> tuple[StudySpec, optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """What worker number `worker` of a fleet builds from the method's study file: the first
    (the study's creator) exactly as `build`, the others with the seed `hpsearch run` derives
    for a worker that joins (`make_sampler`'s salt). Every worker has its own instances."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = _seeded(load_spec(study_file(method, space, "maximize", Path(tmp))).spec, seed)
    salt = None if worker == 0 else f"worker-{worker}"
    sampler = make_sampler(spec, salt=salt, encoding=_encoding())
    return spec, sampler, make_pruner(spec.pruner)


def run_lcbench(bench: LCBench, task: str, method: str, seed: int, trainings: int) -> Run:
    """Trials until `trainings` x 52 epochs are spent; each reports every epoch as hpsearch's
    trainer does (`trial.report`, then `should_prune`), a pruned trial charged what it ran."""
    spec, sampler, pruner = build(method, bench.study_space(), "maximize", seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    result = Run("lcbench", task, method, seed)
    budget = trainings * EPOCHS
    spent = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        values = suggest(trial, spec, encoding=_encoding())
        trial.set_user_attr("epochs", EPOCHS)  # what the trainer records before it trains
        curve = bench.curves(task, [values])[0]
        for epoch in range(1, EPOCHS + 1):
            value = float(curve[epoch - 1])
            trial.report(value, epoch)
            if trial.should_prune():
                spent += epoch
                result.trials.append((epoch, None))
                raise optuna.TrialPruned()
        spent += EPOCHS
        result.trials.append((EPOCHS, float(curve[-1])))
        return float(curve[-1])

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if spent >= budget:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, callbacks=[stop], n_trials=100 * trainings)
    best: float | None = None
    for _, value in result.trials:
        if value is not None and (best is None or value > best):
            best = value
        result.incumbents.append(best)
    return result


def run_tabular(table: Tabular, method: str, seed: int, trainings: int) -> Run:
    """`trainings` trials of the table (no curve: nothing to prune); values recorded are the
    configurations' true means, the sampler sees one noisy seed."""
    spec, sampler, pruner = build(method, table.study_space(), "maximize", seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    bench = table.bench(seed)
    result = Run("tabular", table.dataset, method, seed)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, spec, encoding=_encoding())
        observed = float(bench(table.params(values))["val_acc"])
        result.trials.append((1, table.true_value(values)))
        trial.set_user_attr("observed", observed)
        return observed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=trainings)
    # The incumbent is the best trial by what the study saw, scored by its true value.
    best_seen = -math.inf
    incumbent: float | None = None
    for i, trial in enumerate(study.trials):
        observed = trial.user_attrs.get("observed")
        if observed is not None and observed > best_seen:
            best_seen, incumbent = observed, result.trials[i][1]
        result.incumbents.append(incumbent)
    return result
