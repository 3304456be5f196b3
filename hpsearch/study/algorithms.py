"""The sampler and pruner registries: a spec's `type` picks one of Optuna's, never getattr."""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from hpsearch import search
from hpsearch import spec as s
from hpsearch.spec import LoadedSpec, StudySpec
from hpsearch.study.powers import VALUE, PowersOfTwo
from hpsearch.study.space import grid
from hpsearch.tracking import missing_extra

# --- samplers (a closed registry: the spec's `type` literal picks one) -----------------------


def _auto(p: s.AutoSampler, spec: StudySpec) -> BaseSampler:
    return search.AutoSampler(seed=p.seed)


def _tpe(p: s.TpeSampler, spec: StudySpec) -> BaseSampler:
    group = spec.has_conditions if p.group is None else p.group
    return optuna.samplers.TPESampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        n_ei_candidates=p.n_ei_candidates,
        multivariate=p.multivariate or group,
        group=group,
        constant_liar=p.constant_liar,
    )


def _gp(p: s.GpSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.GPSampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        deterministic_objective=p.deterministic_objective,
        warn_independent_sampling=False,
    )


# Samplers that model only the parameters every trial has (Optuna's intersection search space):
# in a conditional space they draw the others at random in every trial. Optuna's own warning
# is turned off above (it would repeat on every trial); `drawn_at_random` says it once.
_INTERSECTION_ONLY = ("gp", "cmaes", "qmc")


def drawn_at_random(loaded: LoadedSpec) -> str | None:
    """The warning for a sampler that will never model the study's conditional parameters."""
    spec = loaded.spec
    kind = spec.sampler.type
    if kind not in _INTERSECTION_ONLY or not spec.has_conditions:
        return None
    names = [n for n in spec.ordered_parameters() if spec.search_space[n].when]
    message = (
        f"{kind} models only the parameters every trial has, so {', '.join(names)} (set "
        "`when:`) will be drawn at random in every trial; leave `sampler:` out (the default "
        "models conditional spaces) or use tpe"
    )
    return str(loaded.error(("sampler", "type"), message))


def _random(p: s.RandomSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=p.seed)


def _cmaes(p: s.CmaesSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        sigma0=p.sigma0,
        restart_strategy=p.restart_strategy,
        popsize=p.popsize,
        use_separable_cma=p.use_separable_cma,
        with_margin=p.with_margin,
        lr_adapt=p.lr_adapt,
        warn_independent_sampling=False,
    )


def _qmc(p: s.QmcSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.QMCSampler(
        seed=p.seed,
        qmc_type=p.qmc_type,
        scramble=p.scramble,
        warn_independent_sampling=False,
        warn_asynchronous_seeding=False,
    )


def _grid(p: s.GridSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.GridSampler(grid(spec), seed=p.seed)


def _nsga2(p: s.Nsga2Sampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(
        seed=p.seed,
        population_size=p.population_size,
        mutation_prob=p.mutation_prob,
        crossover_prob=p.crossover_prob,
        swapping_prob=p.swapping_prob,
    )


_SAMPLERS: dict[type, Callable[[Any, StudySpec], BaseSampler]] = {
    s.AutoSampler: _auto,
    s.TpeSampler: _tpe,
    s.GpSampler: _gp,
    s.RandomSampler: _random,
    s.CmaesSampler: _cmaes,
    s.QmcSampler: _qmc,
    s.GridSampler: _grid,
    s.Nsga2Sampler: _nsga2,
}


def make_sampler(
    spec: StudySpec, *, salt: str | None = None, encoding: str = VALUE
) -> BaseSampler:
    """The spec's sampler; `salt` derives a distinct seed for a worker joining the study.

    Workers with the same seed would draw the same "random" startup points and duplicate each
    other's trials; the study's creator keeps the seed as written, so one worker reproduces.
    Power-of-two parameters stored as values (`encoding`) are searched as their exponents
    (`PowersOfTwo`); an older study stores the exponents themselves.
    """
    sampler_spec = spec.sampler
    if salt is not None and sampler_spec.seed is not None:
        digest = hashlib.sha256(f"{sampler_spec.seed}:{salt}".encode()).digest()
        sampler_spec = sampler_spec.model_copy(update={"seed": int.from_bytes(digest[:4], "big")})
    with warnings.catch_warnings():
        # TPE's `group` is "experimental" since Optuna 2.8; it is what keeps conditional spaces
        # modelled jointly, so the warning tells our users nothing they can act on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = _SAMPLERS[type(sampler_spec)](sampler_spec, spec)
    powers = [n for n, p in spec.search_space.items() if isinstance(p, s.PowerOfTwoParam)]
    return PowersOfTwo(sampler, powers) if powers and encoding == VALUE else sampler


# --- pruners ---------------------------------------------------------------------------------


def make_pruner(p: Any) -> BasePruner:
    """The Optuna pruner for a pruner spec."""
    with warnings.catch_warnings():
        # `wilcoxon` and `patient` are "experimental" in Optuna: a warning on every worker's
        # start that the user, who chose the pruner by name, can do nothing about.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _pruner(p)


def _pruner(p: Any) -> BasePruner:
    if p is None or isinstance(p, s.NoPruner):
        return optuna.pruners.NopPruner()
    if isinstance(p, s.AutoPruner):
        return search.AutoPruner()
    if isinstance(p, s.PatientPruner):
        wrapped = None if p.wrapped is None else _pruner(p.wrapped)
        return optuna.pruners.PatientPruner(wrapped, patience=p.patience, min_delta=p.min_delta)
    options = p.model_dump(exclude={"type"})
    pruners: dict[type, Callable[..., BasePruner]] = {
        s.MedianPruner: optuna.pruners.MedianPruner,
        s.PercentilePruner: optuna.pruners.PercentilePruner,
        s.SuccessiveHalvingPruner: optuna.pruners.SuccessiveHalvingPruner,
        s.HyperbandPruner: optuna.pruners.HyperbandPruner,
        s.ThresholdPruner: optuna.pruners.ThresholdPruner,
        s.WilcoxonPruner: optuna.pruners.WilcoxonPruner,
    }
    return pruners[type(p)](**options)


# --- requirements ----------------------------------------------------------------------------

# Packages a sampler or pruner imports only once it samples or prunes for real: missing, every
# trial after the first few would fail on them.
_NEEDS: dict[type, tuple[str, ...]] = {
    s.AutoSampler: ("scipy",),  # its GP stage; torch is a core dependency already
    s.CmaesSampler: ("cmaes",),
    s.GpSampler: ("torch", "scipy"),
    s.QmcSampler: ("scipy",),
    s.WilcoxonPruner: ("scipy",),
}


def _missing(model: Any) -> list[str]:
    needed = _NEEDS.get(type(model), ())
    return [name for name in needed if importlib.util.find_spec(name) is None]


def check_requirements(loaded: LoadedSpec) -> None:
    """The packages of the chosen sampler, pruner and trackers are installed (for `validate`
    and `run`, before any study is made).

    Raises:
        SpecError: naming the key, the missing package and the fix.
    """
    spec = loaded.spec
    sampler, missing = spec.sampler, _missing(spec.sampler)
    if missing:
        raise loaded.error(
            ("sampler", "type"),
            f"the {sampler.type} sampler needs the Python package {missing[0]!r}, which is not "
            f"installed here; `pip install {missing[0]}`, or pick another sampler",
        )
    where: tuple[str, ...] = ("pruner",)
    pruner: Any = spec.pruner
    while pruner is not None:
        missing = _missing(pruner)
        if missing:
            raise loaded.error(
                (*where, "type"),
                f"the {pruner.type} pruner needs the Python package {missing[0]!r}, which is "
                f"not installed here; `pip install {missing[0]}`, or pick another pruner",
            )
        pruner = getattr(pruner, "wrapped", None)
        where = (*where, "wrapped")
    tracker = missing_extra(spec.tracking)
    if tracker is not None:
        raise loaded.error(("tracking", tracker[0]), tracker[1])
