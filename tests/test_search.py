"""hpsearch's default search (`hpsearch.search`): what a user of the pruner and sampler notices.

Real Optuna studies in memory; the curves are made up so that the right decision is obvious.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Container, Sequence
from typing import Literal

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch.search import AutoPruner, AutoSampler
from hpsearch.search.mirror import Mirror

Curve = Callable[[int], float]


def _finished(study: optuna.Study, curve: Curve, epochs: int, *, attr: bool = True) -> None:
    """Add a COMPLETE trial whose intermediate values follow `curve` for `epochs` steps."""
    values = {step: curve(step) for step in range(1, epochs + 1)}
    study.add_trial(
        create_trial(
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            value=values[epochs],
            intermediate_values=values,
            user_attrs={"epochs": epochs} if attr else {},
        )
    )


def _decisions(study: optuna.Study, curve: Curve, epochs: int) -> dict[int, bool]:
    """Report `curve` step by step on a new trial, as hpsearch's trainer does: step -> pruned?"""
    trial = study.ask()
    trial.set_user_attr("epochs", epochs)
    decisions = {}
    for step in range(1, epochs + 1):
        trial.report(curve(step), step)
        decisions[step] = trial.should_prune()
    study.tell(trial, state=TrialState.PRUNED)
    return decisions


def _study(**kwargs: object) -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=AutoPruner(), **kwargs)  # type: ignore[arg-type]


def _rising(top: float, speed: float) -> Curve:
    return lambda step: top * (1 - (1 - speed) ** step)


def _line(top: float, length: int, offset: float = 0.0) -> Curve:
    """From `offset` at step 0 to `top` at `length`, in a straight line (a slow starter)."""
    return lambda step: offset + (top - offset) * step / length


def test_a_hopeless_curve_is_stopped_but_never_before_the_warm_up() -> None:
    study = _study()
    for top in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95):
        _finished(study, _rising(top, 0.3), 20)
    decisions = _decisions(study, lambda step: 0.1, 20)
    assert not any(decisions[s] for s in range(1, 4)), "pruned inside the 20% warm-up"
    assert decisions[4], "a flat 0.1 against finished trials at 0.8-0.95 must be stopped"


def test_a_short_trial_is_never_stopped_before_its_third_report() -> None:
    # A fifth of 4 epochs is passed at epoch 1; one or two reports say too little.
    study = _study()
    for top in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95):
        _finished(study, _rising(top, 0.3), 4)
    decisions = _decisions(study, lambda step: 0.1, 4)
    assert [decisions[s] for s in (1, 2, 3)] == [False, False, True]


def test_one_worker_stops_nothing_before_three_trials_finished() -> None:
    study = _study()
    for top in (0.9, 0.95):
        _finished(study, _rising(top, 0.3), 20)
    assert not any(_decisions(study, lambda step: 0.0, 20).values())


def _running(study: optuna.Study, curve: Curve, epochs: int, steps: int) -> optuna.Trial:
    """Another worker's trial, still running: `steps` of its `epochs` reported."""
    trial = study.ask()
    trial.set_user_attr("epochs", epochs)
    for step in range(1, steps + 1):
        trial.report(curve(step), step)
    return trial


def test_a_fleets_first_round_is_pruned_against_the_running_trials() -> None:
    # Four workers started together; nothing has finished. A trial that trails the others
    # at a fifth of its epochs is stopped there; the one ahead of them is kept.
    study = _study()
    for top in (0.6, 0.7, 0.8):
        _running(study, _rising(top, 0.3), 20, 4)
    behind = _decisions(study, lambda step: 0.1, 20)
    assert not any(behind[s] for s in range(1, 4)), "pruned inside the 20% warm-up"
    assert behind[4], "a flat 0.1 against running trials at 0.5-0.6 must be stopped"
    ahead = _decisions(study, _rising(0.9, 0.3), 20)
    assert not any(ahead.values())


def test_running_trials_that_have_not_reached_the_same_share_do_not_count() -> None:
    study = _study()
    for top in (0.6, 0.7, 0.8):
        _running(study, _rising(top, 0.3), 20, 1)  # at 5% of their epochs
    assert not any(_decisions(study, lambda step: 0.1, 20).values())


def test_a_trial_learns_of_trials_that_finished_while_it_ran_without_a_clock() -> None:
    study = _study()
    for top in (0.3, 0.35, 0.4):
        _finished(study, _rising(top, 0.5), 20)
    trial = study.ask()
    trial.set_user_attr("epochs", 20)
    pruned = {}
    for step in range(1, 21):
        if step == 6:  # another worker's trial ends far higher while this one runs
            _finished(study, _rising(0.95, 0.5), 20)
        trial.report(0.45, step)
        pruned[step] = trial.should_prune()
    assert not any(pruned[s] for s in range(1, 8)), "0.45 leads the trials finished before"
    # Read again as it crosses 40% of its epochs: a step count, not 30 seconds of a clock.
    assert pruned[8]


def test_a_slow_starter_is_kept_when_finished_trials_gained_as_much_from_there() -> None:
    study = _study()
    for top in (0.5, 0.55, 0.6):  # fast starters that plateau low
        _finished(study, _rising(top, 0.6), 20)
    for top in (0.9, 0.95, 0.97):  # slow starters that end high
        _finished(study, _line(top, 20), 20)
    slow = _decisions(study, lambda step: 0.99 * step / 20, 20)
    assert not any(slow.values()), "a trial on the winners' path was stopped"
    # A median rule would stop it: at step 6 it is below every fast starter.
    assert 0.99 * 6 / 20 < _rising(0.5, 0.6)(6)


def test_trials_of_different_lengths_are_compared_at_the_same_share_of_their_epochs() -> None:
    study = _study()
    for top in (0.9, 0.92, 0.94, 0.96, 0.98):  # 4-epoch trials: high from the first epoch
        _finished(study, _line(top, 4), 4)
    # A 40-epoch trial on the same path, stretched ten times: behind them at every step they
    # share (at step 3: 0.07 against 0.7), level at every share of its own schedule.
    long = _decisions(study, lambda step: step / 40, 40)
    assert not any(long.values())


def test_the_length_comes_from_the_epochs_parameter_without_the_attribute() -> None:
    study = _study()
    for top in (0.9, 0.92, 0.94, 0.96, 0.98):
        _finished(study, _line(top, 4), 4, attr=False)
    trial = study.ask({"epochs": optuna.distributions.IntDistribution(1, 40)})
    trial.params  # noqa: B018 (suggested)
    epochs = int(trial.params["epochs"])
    pruned = []
    for step in range(1, epochs + 1):
        trial.report(step / epochs, step)
        pruned.append(trial.should_prune())
    assert not any(pruned)


def _falling(low: float) -> Curve:
    return lambda step: low + 1 / step


def test_minimising_studies_are_pruned_the_other_way_round() -> None:
    study = optuna.create_study(direction="minimize", pruner=AutoPruner())
    for low in (0.1, 0.12, 0.14, 0.16, 0.2):
        _finished(study, _falling(low), 20)
    assert _decisions(study, lambda step: 5.0, 20)[10]
    assert not any(_decisions(study, lambda step: 0.05 + 1 / step, 20).values())


class _CountingStorage(InMemoryStorage):
    """Counts the reads of every trial of the study (what costs a query per call on a DB)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        self.reads += 1
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


def _reads(pruner: optuna.pruners.BasePruner, trials: int, steps: int) -> int:
    storage = _CountingStorage()
    study = optuna.create_study(
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=pruner,
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("epochs", steps)
        for step in range(1, steps + 1):
            trial.report(x * step / steps, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=trials)
    return storage.reads


def test_the_pruner_reads_the_study_at_each_fifth_of_a_trial_not_at_every_report() -> None:
    trials, steps = 12, 40
    baseline = _reads(optuna.pruners.NopPruner(), trials, steps)
    extra = _reads(AutoPruner(), trials, steps) - baseline
    assert extra <= 5 * trials, f"{extra} reads of all trials for {trials} trials"
    # Optuna's median pruner, for comparison, reads them at every report.
    assert _reads(optuna.pruners.MedianPruner(), trials, steps) - baseline > trials * steps / 2


def _conditional(trial: optuna.Trial) -> float:
    kind = trial.suggest_categorical("kind", ["a", "b"])
    x = trial.suggest_float(f"x_{kind}", 0, 1)
    return x if kind == "a" else 1 - x


def test_the_sampler_keeps_gp_on_a_conditional_space() -> None:
    sampler = AutoSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_conditional, n_trials=16)
    assert sampler.uses_gp, "a conditional parameter must not hand the study to TPE"
    assert len(study.trials) == 16
    assert study.best_value < 0.05
    # Both branches stay in the model: the last trials are GP's, not random draws.
    model = [t.value for t in study.trials[8:]]
    assert sum(v is not None and v < 0.2 for v in model) >= 5


def _quadratic(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -3, 3) - 1) ** 2 + (trial.suggest_float("y", -3, 3)) ** 2


def _params(seed: int, n_trials: int) -> Sequence[dict[str, object]]:
    study = optuna.create_study(sampler=AutoSampler(seed=seed))
    study.optimize(_quadratic, n_trials=n_trials)
    return [t.params for t in study.trials]


@pytest.mark.slow  # four studies with the GP sampler fitting
def test_the_sampler_is_reproducible_with_a_seed_and_uses_gp_on_a_fixed_space() -> None:
    first = _params(3, 13)
    assert first == _params(3, 13)
    assert first != _params(4, 13)
    sampler = AutoSampler(seed=3)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_quadratic, n_trials=13)
    assert sampler.uses_gp
    assert study.best_value < 1.0


@pytest.mark.slow  # a study with the GP sampler fitting
def test_pruned_trials_do_not_stall_the_model() -> None:
    # Most trials are pruned here; GP must still leave its random start-up (it learns from
    # the pruned trials' curves) and find the good corner.
    study = optuna.create_study(
        direction="maximize", sampler=AutoSampler(seed=0), pruner=AutoPruner()
    )

    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        top = 1 - (x - 0.8) ** 2 - (y - 0.2) ** 2
        trial.set_user_attr("epochs", 10)
        for step in range(1, 11):
            trial.report(top * step / 10, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return top

    study.optimize(objective, n_trials=30)
    assert study.best_value > 0.97


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_diverged_pruned_trial_is_believed_to_end_where_it_stands(
    direction: Literal["maximize", "minimize"],
) -> None:
    # Finished curves climb from about 0.3 to 0.55-0.66 in 8 epochs. A diverged trial stopped
    # at epoch 3 sits at chance (0.1), far below all of them: GP must learn about 0.1, not 0.1
    # plus what those far better curves gained (it used to be told 0.33). A trial
    # stopped among them is still believed to gain what they gained. Minimised, the same
    # curves are losses on another scale: the rule must not care.
    def metric(accuracy: float) -> float:
        return accuracy if direction == "maximize" else 10 * (1 - accuracy)

    study = optuna.create_study(direction=direction)
    for top in (0.55, 0.58, 0.6, 0.62, 0.64, 0.66):
        _finished(study, _line(metric(top), 8, metric(0.3)), 8)
    stopped: dict[float, Curve] = {0.9: lambda step: 0.1, 0.1: _line(0.6, 8, 0.3)}
    for x, accuracy in stopped.items():
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"x": x},
                distributions={"x": FloatDistribution(0, 1)},
                intermediate_values={step: metric(accuracy(step)) for step in (1, 2, 3)},
                user_attrs={"epochs": 8},
            )
        )
    mirror = Mirror(optuna.samplers.GPSampler(seed=0), study.directions)
    mirror.sync(study.trials, current=len(study.trials))
    believed = {t.params["x"]: t.value for t in mirror.study.trials if t.params["x"] != 0.5}
    assert believed[0.9] == pytest.approx(metric(0.1))
    assert believed[0.1] == pytest.approx(metric(0.6), abs=abs(metric(0.02) - metric(0.0)))


def test_gp_never_proposes_a_configuration_already_run() -> None:
    # Every configuration of this space has run: whatever GP proposes was tried, and the
    # mirror says so ({}: the sampler draws the trial at random). With a float beside it,
    # GP's proposal stands.
    def mirror_after(distributions: dict[str, optuna.distributions.BaseDistribution]) -> Mirror:
        mirror = Mirror(optuna.samplers.GPSampler(seed=0), [optuna.study.StudyDirection.MINIMIZE])
        trials = []
        for number, kind in enumerate(["a", "b", "a", "b", "a", "b"]):
            params = {"kind": kind, "x": 0.1 * number}
            trial = create_trial(
                params={n: params[n] for n in distributions},
                distributions=distributions,
                value=float(number),
            )
            trial.number = number
            trials.append(trial)
        mirror.sync(trials, current=len(trials))
        return mirror

    kinds: dict[str, optuna.distributions.BaseDistribution] = {
        "kind": optuna.distributions.CategoricalDistribution(["a", "b"])
    }
    assert mirror_after(kinds).sample(kinds) == {}
    both: dict[str, optuna.distributions.BaseDistribution] = {
        **kinds,
        "x": FloatDistribution(0, 1),
    }
    assert set(mirror_after(both).sample(both)) == {"kind", "x"}


@pytest.mark.parametrize("module", ["hpsearch.search"])
def test_importing_the_search_leaves_torch_out(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
