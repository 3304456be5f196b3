"""The study file: its schema as frozen pydantic models, and `load_spec`, the one YAML reader.

Every error a user can make in the file becomes one `SpecError` line naming the file, the line,
the key path and the fix. This module imports neither torch nor optuna (a test checks), so
`hpsearch validate` answers in milliseconds.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from hpsearch.errors import SpecError
from hpsearch.train.options import METRICS, SEARCHABLE_OPTIONS, TrainerOptions, metric_mode

Scalar = Union[bool, int, float, str]  # noqa: UP007 - pydantic needs the runtime union
KeyPath = tuple[Union[str, int], ...]  # noqa: UP007


class Problem(ValueError):
    """A validation failure that knows which key below the current model it is about."""

    def __init__(self, key: str | int | KeyPath, message: str) -> None:
        super().__init__(message)
        self.keys: KeyPath = key if isinstance(key, tuple) else (key,)
        self.message = message


class _Model(BaseModel):
    """Base of every study-file model: frozen, and unknown keys are errors with a suggestion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and cls.model_config.get("extra") == "forbid":
            valid = list(cls.model_fields)
            for key in data:
                if key not in valid:
                    raise Problem(str(key), _unknown_key_message(str(key), valid))
        return data


def _unknown_key_message(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"unknown key; {hint}valid keys: {', '.join(valid)}"


# --- durations -------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """`90s`, `30m`, `2h`, `1h30m`, `1d` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"a duration such as 90s, 30m or 2h is needed, but got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(rf"(?:\s*{_DURATION.pattern}\s*)+", value):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(value))
    else:
        raise ValueError(f"a duration such as 90s, 30m or 2h is needed, but got {value!r}")
    if not seconds > 0:
        raise ValueError(f"a duration must be > 0, but got {value!r}")
    return seconds


Duration = Annotated[float, Field(json_schema_extra={"examples": ["90s", "30m", "2h"]})]


# --- search space ----------------------------------------------------------------------------

When = dict[str, Union[Scalar, list[Scalar]]]  # noqa: UP007


class _Param(_Model):
    when: When | None = None


class FloatParam(_Param):
    """A real number in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_bounds(self.low, self.high)
        if self.log and self.low <= 0:
            raise Problem("low", f"log scale needs low > 0, but got {self.low}")
        if self.step is not None:
            if self.log:
                raise Problem("step", "`step` and `log: true` cannot be combined; drop one")
            if self.step <= 0:
                raise Problem("step", f"`step` must be > 0, but got {self.step}")
        return self


class IntParam(_Param):
    """An integer in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_bounds(self.low, self.high)
        if self.log and self.low < 1:
            raise Problem("low", f"log scale needs low >= 1, but got {self.low}")
        if self.step < 1:
            raise Problem("step", f"`step` must be >= 1, but got {self.step}")
        if self.log and self.step != 1:
            raise Problem("step", "`step` and `log: true` cannot be combined; drop one")
        return self


class PowerOfTwoParam(_Param):
    """A power of two in [low, high], sampled as its integer exponent.

    `high: auto` means the largest power of two that fits this device (see docs/batch-size.md).
    """

    type: Literal["power_of_two"]
    low: int
    high: int | Literal["auto"]

    @model_validator(mode="after")
    def _check(self) -> PowerOfTwoParam:
        if self.low < 1 or self.low & (self.low - 1):
            raise Problem("low", f"`low` must be a power of two such as 8, but got {self.low}")
        if self.high != "auto":
            if self.high < self.low:
                raise Problem("high", f"`high` must be >= low ({self.low}), but got {self.high}")
        return self

    @property
    def low_exponent(self) -> int:
        return self.low.bit_length() - 1

    def high_exponent(self, limit: int | None = None) -> int:
        """The largest exponent allowed by `high` and by a device limit in samples, if any."""
        caps = [c for c in (None if self.high == "auto" else self.high, limit) if c is not None]
        if not caps:
            raise ValueError("`high: auto` needs the device limit")
        return max(self.low_exponent, math.floor(math.log2(min(caps))))


class CategoricalParam(_Param):
    """One of a list of choices (quote YAML words such as `on`/`off`, which read as booleans)."""

    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("`choices` must list at least one value, but got []")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"`choices` must not repeat a value, but got {choices}")
        return choices


def _check_bounds(low: float, high: float) -> None:
    if not low < high:
        raise Problem("high", f"`high` must be > low ({low}), but got {high}")


Param = Annotated[
    Union[FloatParam, IntParam, PowerOfTwoParam, CategoricalParam],  # noqa: UP007
    Field(discriminator="type"),
]


def param_contains(param: Param, value: Any) -> bool:
    """Whether `value` is a possible sample of `param` (used for enqueued trials)."""
    if isinstance(param, CategoricalParam):
        return any(type(value) is type(c) and value == c for c in param.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(param, PowerOfTwoParam):
        high = math.inf if param.high == "auto" else param.high
        return (
            isinstance(value, int)
            and value >= 1
            and not value & (value - 1)
            and (param.low <= value <= high)
        )
    if isinstance(param, IntParam) and not float(value).is_integer():
        return False
    if not param.low <= value <= param.high:
        return False
    if param.step is not None:
        k = (value - param.low) / param.step
        return abs(k - round(k)) < 1e-9
    return True


# --- sampler ---------------------------------------------------------------------------------


class TpeSampler(_Model):
    type: Literal["tpe"]
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = True
    # None: on exactly when the space has conditional parameters, so TPE keeps modelling the
    # parameters jointly instead of falling back to independent sampling (Optuna 5).
    group: bool | None = None
    constant_liar: bool = True


class GpSampler(_Model):
    type: Literal["gp"]
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class RandomSampler(_Model):
    type: Literal["random"]
    seed: int | None = None


class CmaesSampler(_Model):
    type: Literal["cmaes"]
    seed: int | None = None
    n_startup_trials: int = Field(1, ge=0)
    sigma0: float | None = Field(None, gt=0)
    restart_strategy: Literal["ipop", "bipop"] | None = None
    popsize: int | None = Field(None, ge=1)
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


class QmcSampler(_Model):
    type: Literal["qmc"]
    seed: int | None = None
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class GridSampler(_Model):
    """Every combination of the (discrete) search space, in a random order."""

    type: Literal["grid"]
    seed: int | None = None


class Nsga2Sampler(_Model):
    type: Literal["nsga2"]
    seed: int | None = None
    population_size: int = Field(50, ge=2)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)


SamplerSpec = Annotated[
    Union[  # noqa: UP007
        TpeSampler, GpSampler, RandomSampler, CmaesSampler, QmcSampler, GridSampler, Nsga2Sampler
    ],
    Field(discriminator="type"),
]


# --- pruner ----------------------------------------------------------------------------------


class NoPruner(_Model):
    type: Literal["none"]


class MedianPruner(_Model):
    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)


class PercentilePruner(_Model):
    type: Literal["percentile"]
    percentile: float = Field(ge=0, le=100)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)


class SuccessiveHalvingPruner(_Model):
    type: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)


class HyperbandPruner(_Model):
    type: Literal["hyperband"]
    min_resource: int = Field(1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)


class ThresholdPruner(_Model):
    type: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdPruner:
        if self.lower is None and self.upper is None:
            raise Problem("lower", "the threshold pruner needs `lower`, `upper` or both")
        return self


class WilcoxonPruner(_Model):
    type: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: int = Field(2, ge=0)


class PatientPruner(_Model):
    """Waits `patience` steps without improvement before pruning; `wrapped` decides then."""

    type: Literal["patient"]
    patience: int = Field(ge=0)
    min_delta: float = Field(0.0, ge=0)
    wrapped: WrappedPruner | None = None


WrappedPruner = Annotated[
    Union[  # noqa: UP007
        NoPruner,
        MedianPruner,
        PercentilePruner,
        SuccessiveHalvingPruner,
        HyperbandPruner,
        ThresholdPruner,
        WilcoxonPruner,
    ],
    Field(discriminator="type"),
]
PrunerSpec = Annotated[
    Union[WrappedPruner, PatientPruner],  # noqa: UP007
    Field(discriminator="type"),
]
PatientPruner.model_rebuild()


# --- budget, workers, batch-size fitting -----------------------------------------------------


class Budget(_Model):
    """Study-wide limits, for all workers together; the first one reached stops new trials."""

    n_trials: int | None = Field(None, ge=1)
    timeout: Duration | None = None
    gpu_hours: float | None = Field(None, gt=0)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)


class Workers(_Model):
    """How workers share a server database and recover from crashes."""

    heartbeat_interval: int = Field(30, ge=1)
    grace_period: int | None = Field(None, ge=1)  # None: 4 heartbeats
    max_retries: int = Field(2, ge=0)

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 4 * self.heartbeat_interval


class BatchSizeFit(_Model):
    """How `type: power_of_two, high: auto` finds the largest batch size a device can hold."""

    policy: Literal["per_device", "fleet_min", "accumulate"] = "per_device"
    margin: float = Field(0.10, ge=0, lt=1)
    cpu_max_batch_size: int = Field(256, ge=1)


# --- objective -------------------------------------------------------------------------------


class FunctionObjective(_Model):
    """A Python function `name(params, report)`; every other key is a fixed option."""

    model_config = ConfigDict(extra="allow", frozen=True)
    function: str

    @field_validator("function")
    @classmethod
    def _shape(cls, value: str) -> str:
        target, _, name = value.rpartition(":")
        if not target or not name.isidentifier():
            raise ValueError(
                f"`function` must look like `train.py:train` or `package.module:train`, "
                f"but got {value!r}"
            )
        return value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CommandObjective(_Model):
    """Any program; `{name}` placeholders take the trial's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    command: str
    trial_timeout: Duration | None = None

    @field_validator("trial_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainerObjective(_Model):
    """The built-in trainer; every other key is a fixed `TrainerOptions` value."""

    model_config = ConfigDict(extra="allow", frozen=True)
    trainer: Literal["image_classification"]
    keep_checkpoints: int = Field(3, ge=0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _objective_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):  # serialising a validated spec
        value = {k: True for k in ("function", "command", "trainer") if hasattr(value, k)}
    if isinstance(value, Mapping):
        kinds = [k for k in ("function", "command", "trainer") if k in value]
        if len(kinds) == 1:
            return kinds[0]
    return None


ObjectiveSpec = Annotated[
    Union[  # noqa: UP007
        Annotated[FunctionObjective, Tag("function")],
        Annotated[CommandObjective, Tag("command")],
        Annotated[TrainerObjective, Tag("trainer")],
    ],
    Discriminator(
        _objective_kind,
        custom_error_type="objective_kind",
        custom_error_message=(
            "needs exactly one of `function: file.py:name`, `command: ...` or "
            "`trainer: image_classification`"
        ),
    ),
]


# --- the study -------------------------------------------------------------------------------

Direction = Literal["maximize", "minimize"]


class StudySpec(_Model):
    """One study file, validated. Nothing downstream sees the raw YAML."""

    name: str = Field(min_length=1, max_length=512)
    direction: Direction | None = None
    directions: list[Direction] | None = None
    metric: str | list[str] | None = None
    storage: str | None = None
    artifacts: str | None = None
    sampler: SamplerSpec = Field(default_factory=lambda: TpeSampler(type="tpe"))
    pruner: PrunerSpec = Field(default_factory=lambda: MedianPruner(type="median"))
    budget: Budget = Field(default_factory=Budget)
    workers: Workers = Field(default_factory=Workers)
    batch_size_fit: BatchSizeFit = Field(default_factory=BatchSizeFit)
    objective: ObjectiveSpec
    search_space: dict[str, Param] = Field(default_factory=dict)
    enqueue: list[dict[str, Scalar]] = Field(default_factory=list)

    @field_validator("storage")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).password is not None:
            raise ValueError(
                "a password must never be written in the study file; remove it from the URL "
                "and set HPSEARCH_DB_PASSWORD (or pass --storage / HPSEARCH_STORAGE)"
            )
        return url

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if self.direction is not None and self.directions is not None:
            raise Problem("directions", "give `direction` or `directions`, not both")
        if self.directions is not None and not self.directions:
            raise Problem("directions", "`directions` must list at least one direction")
        n_metrics = len(self.metric) if isinstance(self.metric, list) else 1
        if n_metrics != len(self.study_directions):
            raise Problem(
                "metric",
                f"{len(self.study_directions)} direction(s) need as many metrics, "
                f"but got {n_metrics}; list one metric per direction",
            )
        for metric in self.metrics:
            if isinstance(self.objective, TrainerObjective) and metric not in METRICS:
                raise Problem(
                    "metric",
                    f"the trainer reports {', '.join(METRICS)}, but got {metric!r}",
                )
        if isinstance(self.objective, TrainerObjective):
            self._check_trainer_space(self.objective)
        self._check_conditions()
        self._check_enqueue()
        if isinstance(self.sampler, GridSampler):
            for name, param in self.search_space.items():
                if isinstance(param, FloatParam) and param.step is None:
                    raise Problem(
                        ("search_space", name),
                        "the grid sampler needs discrete parameters; give this float a `step`",
                    )
        return self

    def _check_trainer_space(self, objective: TrainerObjective) -> None:
        for name in self.search_space:
            if name not in SEARCHABLE_OPTIONS:
                raise Problem(
                    ("search_space", name),
                    f"not an option the image_classification trainer can search; valid: "
                    f"{', '.join(sorted(SEARCHABLE_OPTIONS))}",
                )
        for name in objective.options:
            if name in self.search_space:
                raise Problem(
                    ("objective", name),
                    "this option is also in `search_space`; keep it in one place",
                )

    def _check_conditions(self) -> None:
        names = list(self.search_space)
        for name, param in self.search_space.items():
            for parent, allowed in (param.when or {}).items():
                where: KeyPath = ("search_space", name, "when", parent)
                if parent not in self.search_space:
                    raise Problem(
                        where,
                        f"`when` names unknown parameter {parent!r}; valid: {', '.join(names)}",
                    )
                if parent == name:
                    raise Problem(where, "a parameter cannot depend on itself")
                values = allowed if isinstance(allowed, list) else [allowed]
                for value in values:
                    if not param_contains(self.search_space[parent], value):
                        raise Problem(where, f"{value!r} is not a possible value of {parent!r}")
        try:
            self.ordered_parameters()
        except ValueError as e:
            raise Problem("search_space", str(e)) from e

    def _check_enqueue(self) -> None:
        for i, trial in enumerate(self.enqueue):
            for name, value in trial.items():
                if name not in self.search_space:
                    raise Problem(
                        ("enqueue", i, name),
                        f"not in `search_space`; valid: {', '.join(self.search_space)}",
                    )
                if not param_contains(self.search_space[name], value):
                    raise Problem(
                        ("enqueue", i, name),
                        f"{value!r} is outside the search space of {name!r}",
                    )

    # Derived views; the spec stays data only.

    @property
    def study_directions(self) -> list[Direction]:
        if self.directions is not None:
            return list(self.directions)
        if self.direction is not None:
            return [self.direction]
        metric = self.metrics[0]
        if isinstance(self.objective, TrainerObjective) and metric in METRICS:
            return ["maximize" if metric_mode(metric) == "max" else "minimize"]
        return ["minimize"]  # Optuna's own default

    @property
    def metrics(self) -> list[str]:
        if isinstance(self.metric, list):
            return list(self.metric)
        if self.metric is not None:
            return [self.metric]
        return ["val_accuracy" if isinstance(self.objective, TrainerObjective) else "value"]

    @property
    def has_conditions(self) -> bool:
        return any(p.when for p in self.search_space.values())

    def ordered_parameters(self) -> list[str]:
        """Parameter names with every `when` parent before its children; raises on a cycle."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"`when` conditions form a cycle: {' -> '.join(path + [name])}")
            state[name] = 1
            for parent in self.search_space[name].when or {}:
                if parent in self.search_space:
                    visit(parent, path + [name])
            state[name] = 2
            order.append(name)

        for name in self.search_space:
            visit(name, [])
        return order


# --- loading ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` as a string; read every YAML 1.2 float as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class LoadedSpec:
    """A validated spec together with where it came from, for errors found later."""

    def __init__(self, spec: StudySpec, path: Path, lines: dict[KeyPath, int]) -> None:
        self.spec = spec
        self.path = path
        self._lines = lines

    def error(self, keys: KeyPath, message: str) -> SpecError:
        """A `SpecError` for `keys`, located at their line in the file."""
        return SpecError(_format(self.path, self._lines, keys, message))

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate a study file.

    Raises:
        SpecError: one line, ``file:line: key.path: what is wrong and the fix``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read the study file: {e}") from None
    data, lines = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}:1: the study file must be a mapping of keys such as `name:` and "
            f"`search_space:`, but got {type(data).__name__}"
        )
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        keys, message = _first_problem(e)
        extra = len(e.errors()) - 1
        if extra:
            message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise SpecError(_format(path, lines, keys, message)) from None
    loaded = LoadedSpec(spec, path, lines)
    if isinstance(spec.objective, TrainerObjective):
        _check_trainer_options(loaded, spec)
    return loaded


def _check_trainer_options(loaded: LoadedSpec, spec: StudySpec) -> None:
    """Validate the fixed trainer options with each searched option at its lowest value."""
    assert isinstance(spec.objective, TrainerObjective)
    sample: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        sample[name] = param.choices[0] if isinstance(param, CategoricalParam) else param.low
    try:
        TrainerOptions.model_validate({**spec.objective.options, **sample})
    except ValidationError as e:
        keys, message = _first_problem(e)
        if keys and keys[0] in spec.search_space:
            raise loaded.error(("search_space", *keys), message) from None
        if keys and keys[0] not in TrainerOptions.model_fields and "unknown key" in message:
            message = _unknown_key_message(str(keys[0]), sorted(TrainerOptions.model_fields))
        raise loaded.error(("objective", *keys), message) from None


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[KeyPath, int]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        raise SpecError(
            f"{path}{line}: YAML syntax error: {problem}; check indentation, colons and quotes"
        ) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: YAML syntax error: {e}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _collect_lines(path, node, (), lines)
    return data, lines


def _collect_lines(
    file: Path, node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]
) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            if path in lines:
                raise SpecError(
                    _format(file, {path: key.start_mark.line + 1}, path, "")
                    + f"duplicate key (first on line {lines[path]}); keep one"
                )
            lines[path] = key.start_mark.line + 1
            _collect_lines(file, value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(file, item, (*prefix, i), lines)


def _first_problem(error: ValidationError) -> tuple[KeyPath, str]:
    """The first error as (key path without pydantic's union tags, message without prefixes)."""
    detail = error.errors()[0]
    keys = _strip_tags(detail["loc"])
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        return (*keys, *cause.keys), cause.message
    kind = detail["type"]
    message = detail["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        ctx = detail["ctx"]
        tags = [t.strip(" '") for t in str(ctx["expected_tags"]).split(",")]
        close = difflib.get_close_matches(str(ctx["tag"]), tags, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        return (*keys, "type"), f"unknown type {ctx['tag']!r}; {hint}valid: {', '.join(tags)}"
    if kind == "union_tag_not_found":
        return (*keys, "type"), f"`type` is missing; valid: {detail['ctx']['expected_tags']}"
    if kind == "missing":
        return keys, "this key is required but missing"
    if kind == "extra_forbidden":
        return keys, "unknown key; remove it"
    given = detail.get("input")
    if kind not in ("value_error", "objective_kind") and not isinstance(given, dict | list):
        message = f"{message}, but got {given!r}"
    return keys, message


def _strip_tags(loc: Sequence[str | int]) -> KeyPath:
    """Drop the union-member segments pydantic inserts (`float`, `function`, `int`...)."""
    tags = {
        "float", "int", "power_of_two", "categorical", "function", "command", "trainer",
        "tpe", "gp", "random", "cmaes", "qmc", "grid", "nsga2", "none", "median", "percentile",
        "successive_halving", "hyperband", "threshold", "wilcoxon", "patient", "str", "bool",
        "list[union[bool,int,float,str]]", "literal['auto']", "literal['maximize','minimize']",
        "list[str]", "constrained-int", "union[bool,int,float,str]",
    }  # fmt: skip
    out: list[str | int] = []
    for i, seg in enumerate(loc):
        # A tag follows the key it belongs to; the first segment is always a real key.
        if (
            i > 0
            and isinstance(seg, str)
            and (seg in tags or seg.startswith(("literal[", "list[")))
        ):
            continue
        out.append(seg)
    return tuple(out)


def _format(path: Path, lines: Mapping[KeyPath, int], keys: KeyPath, message: str) -> str:
    line = None
    for n in range(len(keys), -1, -1):
        if keys[:n] in lines:
            line = lines[keys[:n]]
            break
    where = f"{path}:{line}" if line is not None else str(path)
    dotted = ".".join(str(k) for k in keys)
    return f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the study file, for editor completion (yaml-language-server)."""
    schema = StudySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hpsearch study file"
    return schema
