"""Samplers and pruners: one model per kind, options typed per kind, chosen by `type`."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from hpsearch.spec._base import Problem, SpecModel, describe, suggest


def _by_name(kind: str, name: str, example: str, union: Any) -> BeforeValidator:
    """Explain a sampler or pruner that is not a mapping, e.g. `sampler: tpe`.

    A bare name is refused rather than read as shorthand: one spelling for every study file, and
    `sampler: tpe` next to `sampler: {type: tpe, seed: 0}` would make options look optional.
    """
    models = typing.get_args(union)
    names = [typing.get_args(m.model_fields["type"].annotation)[0] for m in models]

    def accept(value: Any) -> Any:
        if isinstance(value, str):
            if value not in names:
                hint = suggest(value, names)
                raise Problem((), f"unknown {kind} {value!r}; {hint}valid: {', '.join(names)}")
            raise Problem(
                (), f"must be a mapping such as `{{type: {value}}}`, but got the bare name "
                f"{value!r}; write `{{type: {value}}}`",
            )  # fmt: skip
        if not isinstance(value, Mapping):
            raise Problem((), f"must be a mapping such as `{example}`, but got {describe(value)}")
        return value

    return BeforeValidator(accept)


# --- sampler ---------------------------------------------------------------------------------


class AutoSampler(SpecModel):
    """hpsearch's default: the sampler the search benchmark chose (docs/search.md)."""

    type: Literal["auto"]
    seed: int | None = None


class TpeSampler(SpecModel):
    type: Literal["tpe"]
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = True
    # None: on exactly when the space has conditional parameters, so TPE keeps modelling the
    # parameters jointly instead of falling back to independent sampling (Optuna 5).
    group: bool | None = None
    constant_liar: bool = True


class GpSampler(SpecModel):
    type: Literal["gp"]
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class RandomSampler(SpecModel):
    type: Literal["random"]
    seed: int | None = None


class CmaesSampler(SpecModel):
    type: Literal["cmaes"]
    seed: int | None = None
    n_startup_trials: int = Field(1, ge=0)
    sigma0: float | None = Field(None, gt=0)
    restart_strategy: Literal["ipop", "bipop"] | None = None
    popsize: int | None = Field(None, ge=1)
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


class QmcSampler(SpecModel):
    type: Literal["qmc"]
    seed: int | None = None
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class GridSampler(SpecModel):
    """Every combination of the (discrete) search space, in a random order."""

    type: Literal["grid"]
    seed: int | None = None


class Nsga2Sampler(SpecModel):
    type: Literal["nsga2"]
    seed: int | None = None
    population_size: int = Field(50, ge=2)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)


_Samplers = Union[  # noqa: UP007
    AutoSampler,
    TpeSampler,
    GpSampler,
    RandomSampler,
    CmaesSampler,
    QmcSampler,
    GridSampler,
    Nsga2Sampler,
]
SamplerSpec = Annotated[
    _Samplers,
    Field(discriminator="type"),
    _by_name("sampler", "tpe", "{type: tpe, seed: 0}", _Samplers),
]


# --- pruner ----------------------------------------------------------------------------------


class AutoPruner(SpecModel):
    """hpsearch's default: the pruner the search benchmark chose (docs/search.md)."""

    type: Literal["auto"]


class NoPruner(SpecModel):
    type: Literal["none"]


class MedianPruner(SpecModel):
    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)


class PercentilePruner(SpecModel):
    type: Literal["percentile"]
    percentile: float = Field(ge=0, le=100)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)


class SuccessiveHalvingPruner(SpecModel):
    type: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)


class HyperbandPruner(SpecModel):
    type: Literal["hyperband"]
    min_resource: int = Field(1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)


class ThresholdPruner(SpecModel):
    type: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdPruner:
        if self.lower is None and self.upper is None:
            raise Problem(
                "lower", "the threshold pruner needs `lower`, `upper` or both, but got neither"
            )
        return self


class WilcoxonPruner(SpecModel):
    type: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: int = Field(2, ge=0)


class PatientPruner(SpecModel):
    """Waits `patience` steps without improvement before pruning; `wrapped` decides then."""

    type: Literal["patient"]
    patience: int = Field(ge=0)
    min_delta: float = Field(0.0, ge=0)
    wrapped: WrappedPruner | None = None


_Wrapped = Union[  # noqa: UP007
    NoPruner,
    MedianPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    HyperbandPruner,
    ThresholdPruner,
    WilcoxonPruner,
]
# `auto` is not offered inside `patient`: it has its own notion of patience.
_Pruners = Union[AutoPruner, _Wrapped, PatientPruner]  # noqa: UP007
WrappedPruner = Annotated[
    _Wrapped,
    Field(discriminator="type"),
    _by_name("pruner", "median", "{type: median}", _Wrapped),
]
PrunerSpec = Annotated[
    _Pruners,
    Field(discriminator="type"),
    _by_name("pruner", "median", "{type: median, n_warmup_steps: 2}", _Pruners),
]
PatientPruner.model_rebuild()
