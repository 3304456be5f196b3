"""`hpsearch advise`: what a study found, in plain words, and the narrowed study to run next.

Which options mattered (Optuna's fANOVA and PED-ANOVA importance evaluators), options whose
best trials sit at a bound (and the range to try instead), whether the best value still
improves, what pruning saved, failed trials grouped by cause with the fix, and the next search
space: narrowed around the best trials where an option mattered, widened past a bound the best
trials press against, fixed at the best value where it did not matter.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect.savings import Savings, describe
from hpsearch.inspect.source import StudyView
from hpsearch.spec import CategoricalParam, FloatParam, IntParam, Param, PowerOfTwoParam
from hpsearch.storage.attrs import CURVES_ATTR, FAIL_REASON_ATTR
from hpsearch.storage.optuna_compat import trials_study
from hpsearch.study import EXPONENT_PREFIX

MIN_TRIALS_FOR_IMPORTANCE = 5
# fANOVA fits a random forest to the completed trials, its cost growing faster than their
# number (measured: 3 s of CPU for 200 trials, 14 s for 700), while its ranking of a handful of
# options holds on a few hundred. Above this, both evaluators see the same seeded random draw
# of this many completed trials, and the advice says so.
IMPORTANCE_TRIALS = 200
_SHARES = ("val_accuracy", "val_balanced_accuracy")  # metrics that cannot exceed 1
MATTERED = 0.2  # mean importance (of the two evaluators, each out of 1) that counts as mattering
NEGLIGIBLE = 0.05  # below this an option is fixed at its best value in the next study
AT_BOUND = 0.1  # the best trial within this share of the range from a bound
TOP_SHARE = 0.1  # the "best trials": this share of completed trials (at least 3)
SETTLED_AFTER = 10  # finished trials before "improving or settled" is judged, and completed
# trials before a range is narrowed or an option fixed (fewer give a first impression only)
# Where a widened range must stop: trainer options with a hard limit.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "momentum": (0.0, 0.99),
    "label_smoothing": (0.0, 0.5),
    "dropout": (0.0, 0.9),
    "lr": (1e-8, 10.0),
    "weight_decay": (0.0, None),
    "epochs": (1, None),
    "warmup_epochs": (0, None),
    "freeze_backbone_epochs": (0, None),
}


@dataclass(frozen=True)
class Importance:
    name: str
    fanova: float
    ped_anova: float

    @property
    def score(self) -> float:
        return (self.fanova + self.ped_anova) / 2


@dataclass(frozen=True)
class BoundHint:
    name: str
    side: str  # "low" or "high"
    best: Any
    bound: Any
    suggested: Any  # the bound to try next, or None when it cannot move (`high: auto`)


@dataclass(frozen=True)
class FailureGroup:
    cause: str
    trials: list[int]
    example: str
    fix: str


@dataclass
class Advice:
    """Everything `hpsearch advise` says; `lines()` says it."""

    study: str
    metric: str
    direction: str
    counts: dict[str, int]
    best: FrozenTrial | None
    best_params: dict[str, Any]
    importances: list[Importance]
    importance_note: str | None
    bounds: list[BoundHint]
    progress: str
    pruning: str | None
    failures: list[FailureGroup]
    next_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_fixed: dict[str, Any] = field(default_factory=dict)
    next_enqueue: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    def mattered(self) -> list[Importance]:
        ranked = sorted(self.importances, key=lambda i: -i.score)
        return [i for n, i in enumerate(ranked) if i.score >= MATTERED or (n == 0 and i.score)]


def collect(
    view: StudyView,
    trials: list[FrozenTrial] | None = None,
    *,
    importance_trials: int = IMPORTANCE_TRIALS,
) -> Advice:
    """Work out the advice (single-objective studies) from `trials`, else from the study read.

    `importance_trials`: the most completed trials the importances are computed from.
    """
    if trials is None:
        trials = list(view.trials(without=frozenset({CURVES_ATTR})))
    counts = {
        s: sum(t.state.name == s for t in trials)
        for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    }
    direction = view.directions[0]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
    ranked = sorted(complete, key=lambda t: -sign * t.values[0])  # best first
    best = ranked[0] if ranked and not view.multi_objective else None
    importances, note = (
        ([], "several objectives: see `hpsearch best` for the Pareto front")
        if view.multi_objective
        else _importances(view, complete, importance_trials)
    )
    advice = Advice(
        study=view.name,
        metric=view.metrics[0],
        direction=direction.name.lower(),
        counts=counts,
        best=best,
        best_params=view.user_params(best.params) if best else {},
        importances=importances,
        importance_note=note,
        bounds=[],
        progress=_progress([t for t in trials if t.state.is_finished()], sign),
        pruning=_pruning(trials, view),
        failures=_failures(trials),
    )
    if best is not None and advice.metric in _SHARES and sign * best.values[0] >= 1.0:
        advice.progress = (
            f"solved: trial {best.number} has {advice.metric} 1.0, the most there is; more "
            "search cannot show which settings are better: add validation images (or harder "
            "ones) to tell them apart"
        )
    if best is not None:
        top = ranked[: max(3, round(TOP_SHARE * len(ranked)))]
        settled = len(complete) >= SETTLED_AFTER
        _next_space(advice, view, top, narrow=settled)
    return advice


def _importances(
    view: StudyView, complete: list[FrozenTrial], limit: int
) -> tuple[list[Importance], str | None]:
    """(each option's importance, a note: why there are none, or what they were computed from)."""
    n_complete = len(complete)
    if n_complete < MIN_TRIALS_FOR_IMPORTANCE:
        return [], (
            f"{n_complete} completed trial(s): importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE}"
        )
    note = None
    if n_complete > limit:
        complete = sorted(random.Random(0).sample(complete, limit), key=lambda t: t.number)
        note = (
            f"(importances from a random {limit:,} of the {n_complete:,} completed trials: "
            "more would cost minutes and not change the ranking)"
        )
    study = trials_study(view.name, view.directions, complete)
    evaluators = {
        "fanova": optuna.importance.FanovaImportanceEvaluator(seed=0),
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator(),
    }
    scores: dict[str, dict[str, float]] = {}
    for key, evaluator in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few trials in the top quantile" et al.
                found = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as e:
            if "zero total variance" in str(e):
                return [], "every completed trial scored the same: no option made a difference"
            return [], f"importances could not be computed: {e}"
        scores[key] = {_user_name(view, k): float(v) for k, v in found.items()}
    names = list(scores["fanova"])
    if not names:
        return [], "no option was searched in every completed trial"
    return [
        Importance(n, scores["fanova"].get(n, 0.0), scores["ped_anova"].get(n, 0.0)) for n in names
    ], note


def _user_name(view: StudyView, key: str) -> str:
    name = key.removeprefix(EXPONENT_PREFIX)
    return name if key.startswith(EXPONENT_PREFIX) and name in view.power_of_two else key


def _progress(finished: list[FrozenTrial], sign: float) -> str:
    """Improving or settled, over finished trials in order (a pruned or failed one gains none)."""
    n = len(finished)
    if n < SETTLED_AFTER:
        return f"too early to tell: {n} finished trial(s), judged from {SETTLED_AFTER}"
    ordered = sorted(finished, key=lambda t: t.number)
    best, at = None, None
    for i, trial in enumerate(ordered):
        if trial.state != TrialState.COMPLETE or not trial.values:
            continue
        value = sign * trial.values[0]
        if best is None or value - best > max(1e-12, 1e-3 * abs(best)):
            best, at = value, i
    if at is None:
        return f"nothing completed in {n} finished trials: see the failed trials below"
    number = ordered[at].number
    if at >= 0.75 * (n - 1):
        return (
            f"still improving: the best value was reached at trial {number}, in the last "
            "quarter of the study; more trials are likely to pay off"
        )
    return (
        f"settled: no gain of 0.1% or more in the last {n - 1 - at} finished trials (best "
        f"since trial {number}); more of the same search is unlikely to help"
    )


def _pruning(trials: list[FrozenTrial], view: StudyView) -> str | None:
    """`status`'s pruning figure, in the same words (`inspect.savings`)."""
    if not any(t.state == TrialState.PRUNED for t in trials):
        return None
    savings = Savings.for_view(view)
    for t in trials:
        savings.add(t, view.user_params(t.params) if t.state == TrialState.PRUNED else {})
    return "pruning " + describe(savings.as_json())


_CAUSES: list[tuple[str, re.Pattern[str], str]] = [
    (
        "out of memory",
        re.compile(r"^oom|out of memory|OutOfMemory", re.I),
        "lower `batch_size.high` (or use `high: auto`), a smaller dataset.image_size or model, or "
        "`precision: bf16`",
    ),
    (
        "diverged",
        re.compile(r"\bnan\b|diverged|\binf\b", re.I),
        "the learning rate was too high for these settings: lower `lr.high`",
    ),
    (
        "stopped",
        re.compile(r"worker stopped|sigterm|sigint|stale|heartbeat|interrupt", re.I),
        "the worker was stopped or lost; such trials are retried once, nothing to fix unless "
        "it repeats",
    ),
    (
        "data",
        re.compile(r"DataError|image|dataset|No such file|FileNotFound|truncated", re.I),
        "run `hpsearch validate` to check the data; fix or remove the files named",
    ),
]


def _failures(trials: list[FrozenTrial]) -> list[FailureGroup]:
    groups: dict[str, FailureGroup] = {}
    for t in trials:
        if t.state != TrialState.FAIL:
            continue
        reason = str(t.user_attrs.get(FAIL_REASON_ATTR) or "no reason recorded")
        cause, fix = (
            "code",
            "an error in the objective's code: `hpsearch run -v` shows the traceback",
        )
        for name, pattern, remedy in _CAUSES:
            if pattern.search(reason):
                cause, fix = name, remedy
                break
        group = groups.setdefault(cause, FailureGroup(cause, [], reason[:160], fix))
        group.trials.append(t.number)
    return sorted(groups.values(), key=lambda g: -len(g.trials))


def _position(trial: FrozenTrial, name: str, param: Param) -> float | None:
    """Where the trial's value lies in the range it was drawn from: 0 (low) to 1 (high).

    The trial's own distribution, not the file: it holds the fitted `high: auto` limit and
    the log scale (a power of two: its value, or in an older study its exponent).
    """
    dist = trial.distributions.get(name)
    key = name if dist is not None and not dist.single() else EXPONENT_PREFIX + name
    dist = trial.distributions.get(key)
    if not isinstance(dist, FloatDistribution | IntDistribution) or key not in trial.params:
        return None
    low, high, value = float(dist.low), float(dist.high), float(trial.params[key])
    if dist.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return None if high == low else (value - low) / (high - low)


def _widen(name: str, param: Param, side: str) -> Any:
    """The bound to try next: half the range further (a factor 10 at most on a log scale)."""
    lo, hi = LIMITS.get(name, (None, None))
    if isinstance(param, PowerOfTwoParam):
        return (
            max(1, param.low // 4)
            if side == "low"
            else "auto"
            if param.high == "auto"
            else int(param.high) * 4
        )
    assert isinstance(param, FloatParam | IntParam)
    if param.log:
        factor = min(10.0, math.sqrt(param.high / param.low))
        value = param.low / factor if side == "low" else param.high * factor
    else:
        half = (param.high - param.low) / 2
        value = param.low - half if side == "low" else param.high + half
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    if isinstance(param, IntParam):
        value = math.floor(value) if side == "low" else math.ceil(value)
        if param.log:
            value = max(1, value)
    else:
        value = float(f"{value:.3g}")
    return value


def _next_space(advice: Advice, view: StudyView, top: list[FrozenTrial], *, narrow: bool) -> None:
    """The next study's space: widened, narrowed or fixed, each change said in `changes`.

    Narrowing and fixing need `narrow` (enough completed trials); widening a range whose bound
    the best trials press against does not: trying past it costs little.
    """
    assert advice.best is not None
    space = view.loaded.spec.search_space
    scores = {i.name: i.score for i in advice.importances}
    best = advice.best_params
    parents = {p for param in space.values() for p in (param.when or {})}
    for name, param in space.items():
        raw = param.model_dump(exclude_none=True, exclude_defaults=True)
        where = _position(advice.best, name, param) if name in best else None
        if where is None or isinstance(param, CategoricalParam):
            advice.next_space[name] = raw
            continue
        assert isinstance(param, FloatParam | IntParam | PowerOfTwoParam)
        side = _pressed(where, [_position(t, name, param) for t in top])
        if side is not None and scores.get(name, 1.0) >= NEGLIGIBLE:
            suggested = _widen(name, param, side)
            bound = param.high if side == "high" else param.low
            movable = suggested != bound
            hint = BoundHint(name, side, best[name], bound, suggested if movable else None)
            advice.bounds.append(hint)
            if movable:
                raw[side] = suggested
                advice.changes.append(
                    f"{name}: {side} {fmt(bound)} -> {fmt(suggested)} (the best trials sat at "
                    f"the {side} end)"
                )
        elif not narrow:
            pass
        elif scores.get(name, 1.0) < NEGLIGIBLE and name not in parents and not param.when:
            advice.next_fixed[name] = best[name]
            advice.changes.append(f"{name}: fixed at {fmt(best[name])} (it barely mattered)")
            continue
        elif scores.get(name, 0.0) >= MATTERED:
            values = [float(p[name]) for t in top if name in (p := view.user_params(t.params))]
            if len(values) >= 3:
                _narrow(name, param, raw, values, advice)
        advice.next_space[name] = raw
    advice.next_enqueue = {k: v for k, v in best.items() if k in advice.next_space}


def _pressed(best: float, top: list[float | None]) -> str | None:
    """The bound the best trials press against: the best within 10% of it, most near it."""
    near = sorted(p for p in top if p is not None)
    if not near:
        return None
    middle = near[len(near) // 2]
    if best >= 1 - AT_BOUND and middle >= 0.75:
        return "high"
    if best <= AT_BOUND and middle <= 0.25:
        return "low"
    return None


def _narrow(
    name: str,
    param: FloatParam | IntParam | PowerOfTwoParam,
    raw: dict[str, Any],
    values: list[float],
    advice: Advice,
) -> None:
    """Around the best trials' values, with a quarter of their spread either side."""
    if isinstance(param, PowerOfTwoParam):
        return  # the device bounds it; its few values need no narrowing
    log = param.log
    lo, hi = (math.log(min(values)), math.log(max(values))) if log else (min(values), max(values))
    margin = max(
        (hi - lo) / 4, (math.log(param.high / param.low) if log else param.high - param.low) / 10
    )
    low, high = (
        (math.exp(lo - margin), math.exp(hi + margin)) if log else (lo - margin, hi + margin)
    )
    low, high = max(low, param.low), min(high, param.high)
    if isinstance(param, IntParam):
        low, high = math.floor(low), math.ceil(high)
    else:  # rounded outwards, so the best values stay inside
        low, high = (
            max(param.low, _round(low, down=True)),
            min(param.high, _round(high, down=False)),
        )
    if low < high and (low, high) != (param.low, param.high):
        raw["low"], raw["high"] = low, high
        advice.changes.append(
            f"{name}: {fmt(param.low)}..{fmt(param.high)} -> {fmt(low)}..{fmt(high)} "
            "(around the best trials; it mattered)"
        )


def _round(x: float, *, down: bool) -> float:
    """`x` to 3 significant digits, rounded down or up."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - 2)
    return float(f"{(math.floor(x / scale) if down else math.ceil(x / scale)) * scale:.6g}")


def fmt(value: Any) -> str:
    """A value as the study file would show it: `0.09833`, `1.0`, `64`."""
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text if any(c in text for c in ".en") else text + ".0"
    return str(value)
