"""The whole study file (`StudySpec`) with its budget, workers and batch-size-fit sections."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from hpsearch.spec._base import (
    MAX_COUNT,
    Duration,
    KeyPath,
    Problem,
    Scalar,
    SpecModel,
    parse_duration,
    suggest,
)
from hpsearch.spec.algorithms import (
    AutoPruner,
    AutoSampler,
    GridSampler,
    PrunerSpec,
    SamplerSpec,
)
from hpsearch.spec.artifacts import ArtifactStoreSpec
from hpsearch.spec.messages import example
from hpsearch.spec.objectives import ObjectiveSpec, TrainerObjective
from hpsearch.spec.params import FloatParam, Param, describe_param, param_contains
from hpsearch.spec.tracking import Tracking
from hpsearch.train.options import (
    METRICS,
    SEARCHABLE_OPTIONS,
    DatasetOptions,
    TrainerOptions,
    metric_mode,
)

# --- budget, workers, batch-size fitting -----------------------------------------------------


class Budget(SpecModel):
    """Study-wide limits, for all workers together; the first one reached stops new trials."""

    n_trials: int | None = Field(None, ge=1, le=MAX_COUNT)
    timeout: Duration | None = None
    gpu_hours: float | None = Field(None, gt=0, le=MAX_COUNT)
    epochs: int | None = Field(
        None, ge=1, le=MAX_COUNT
    )  # epochs (reported steps) trained, all trials
    target: float | None = None  # stop once a completed trial's metric reaches this
    max_failures: int = Field(
        5, ge=1, le=MAX_COUNT
    )  # a worker stops after this many failed trials in a row

    @property
    def is_unlimited(self) -> bool:
        """No limit at all: the study runs until it is stopped."""
        limits = (self.n_trials, self.timeout, self.gpu_hours, self.epochs)
        return all(limit is None for limit in limits)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)


class Workers(SpecModel):
    """How workers share a server database and recover from crashes."""

    heartbeat_interval: int = Field(30, ge=1, le=MAX_COUNT)
    grace_period: int | None = Field(None, ge=1, le=MAX_COUNT)  # None: 4 heartbeats
    max_retries: int = Field(2, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> Workers:
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise Problem(
                "grace_period",
                f"must be > heartbeat_interval ({self.heartbeat_interval}), but got "
                f"{self.grace_period}; otherwise a live trial is failed between two heartbeats",
            )
        return self

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 4 * self.heartbeat_interval


class BatchSizeFit(SpecModel):
    """How `type: power_of_two, high: auto` finds the largest batch size a device can hold."""

    policy: Literal["per_device", "fleet_min", "accumulate"] = "per_device"
    margin: float = Field(0.10, ge=0, lt=1)
    cpu_max_batch_size: int = Field(256, ge=1)


# --- the study -------------------------------------------------------------------------------

Direction = Literal["maximize", "minimize"]
_STORAGE_URL = re.compile(r"(?:sqlite|postgresql|mysql|mariadb)(?:\+\w+)?://.*|grpc://.+", re.S)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_@+=,:-][A-Za-z0-9._@+=,: -]*")
_STORAGE_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_STORAGE_EXAMPLES = (
    "sqlite:///storage/hpsearch.db, postgresql+psycopg://user@host/db, "
    "mysql+pymysql://user@host/db or grpc://host:13000"
)


class StudySpec(SpecModel):
    """One study file, validated. Nothing downstream sees the raw YAML."""

    name: str = Field(min_length=1, max_length=512)
    direction: Direction | None = None
    directions: list[Direction] | None = None
    metric: str | list[str] | None = None
    storage: str | None = None
    artifacts: str | None = None
    artifact_store: ArtifactStoreSpec | None = None
    tracking: Tracking = Field(default_factory=Tracking)
    sampler: SamplerSpec = Field(default_factory=lambda: AutoSampler(type="auto"))
    pruner: PrunerSpec = Field(default_factory=lambda: AutoPruner(type="auto"))
    budget: Budget = Field(default_factory=Budget)
    workers: Workers = Field(default_factory=Workers)
    batch_size_fit: BatchSizeFit = Field(default_factory=BatchSizeFit)
    objective: ObjectiveSpec
    search_space: dict[str, Param] = Field(default_factory=dict)
    enqueue: list[dict[str, Scalar]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_empty_values(cls, data: Any) -> Any:
        # `direction:` with nothing after it is YAML null: most likely a value left out.
        if isinstance(data, Mapping):
            if isinstance(data.get("direction"), list):  # one per metric: the plural key
                raise Problem(
                    "direction",
                    "must be maximize or minimize, but got a list; for one direction per "
                    "metric write `directions:` (with an s)",
                )
            for key, value in data.items():
                if value is None and key in cls.model_fields:
                    raise Problem(
                        str(key), f"is empty; give a value such as {example((key,))} or delete it"
                    )
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        # The name is also a folder (artifacts/<name>/checkpoints): `../../x` or `/etc/x` would
        # write, and delete, files outside the study's folder.
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            raise ValueError(
                f"must be usable as a folder name, but got {name!r}; use letters, digits and "
                "`-_.@+=,:` (no `/`, `\\`, `..` or leading `.`), e.g. `resnet50-lr-search`"
            )
        return name

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        shown = _STORAGE_PASSWORD.sub(r"\1***@", url)
        if not _STORAGE_URL.fullmatch(url):
            scheme = url.partition("://")[0] if "://" in url else None
            found = f"storage {scheme!r} is not supported" if scheme else f"got {shown!r}"
            raise ValueError(f"must be a storage URL such as {_STORAGE_EXAMPLES}, but {found}")
        try:
            parts = urlsplit(url)
            password, _ = parts.password, parts.port
        except ValueError as e:
            raise ValueError(f"{shown!r} is not a valid URL ({e}); fix it or remove it") from None
        if password is not None:
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
        if any(not m.strip() for m in self.metrics):
            raise Problem(
                "metric", f"must name a metric such as `val_accuracy`, but got {self.metric!r}"
            )
        if isinstance(self.metric, list) and len(set(self.metric)) != len(self.metric):
            raise Problem("metric", f"must not repeat a metric, but got {self.metric}")
        n_metrics = len(self.metric) if isinstance(self.metric, list) else 1
        if self.budget.target is not None and n_metrics != 1:
            raise Problem(
                ("budget", "target"),
                "stops the study when its metric reaches a value, which needs one metric; "
                "drop it, or study one metric",
            )
        if n_metrics != len(self.study_directions):
            raise Problem(
                "metric",
                f"{len(self.study_directions)} direction(s) need as many metrics, "
                f"but got {n_metrics}; list one metric per direction",
            )
        if isinstance(self.objective, TrainerObjective):
            for metric in self.metrics:
                if metric not in METRICS:
                    raise Problem(
                        "metric", f"the trainer reports {', '.join(METRICS)}, but got {metric!r}"
                    )
            self._check_trainer_space(self.objective)
        self._check_conditions()
        self._check_enqueue()
        self._check_grid()
        return self

    def _check_grid(self) -> None:
        if isinstance(self.sampler, GridSampler):
            for name, param in self.search_space.items():
                if param.when:
                    raise Problem(
                        ("search_space", name, "when"),
                        "the grid sampler walks the product of every parameter's values, and a "
                        "conditional parameter breaks it (its points repeat, the grid never "
                        "ends); drop `when`, or use another sampler such as {type: tpe}",
                    )
                if isinstance(param, FloatParam) and param.step is None:
                    raise Problem(
                        ("search_space", name),
                        "the grid sampler needs discrete parameters; give this float a `step`",
                    )

    def _check_trainer_space(self, objective: TrainerObjective) -> None:
        for name in self.search_space:
            if name not in SEARCHABLE_OPTIONS:
                valid = sorted(SEARCHABLE_OPTIONS)
                fixed = {**dict.fromkeys(DatasetOptions.model_fields, "objective.dataset")}
                fixed.update(dict.fromkeys(TrainerOptions.model_fields, "objective"))
                if name in fixed:
                    raise Problem(
                        ("search_space", name),
                        f"`{name}` is a trainer option that cannot be searched; set it under "
                        f"`{fixed[name]}:` instead; searchable: {', '.join(valid)}",
                    )
                raise Problem(
                    ("search_space", name),
                    f"not an option the image_classification trainer can search; "
                    f"{suggest(name, valid)}valid: {', '.join(valid)}",
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
                    raise Problem(
                        where, f"a parameter cannot depend on itself; remove {name!r} here"
                    )
                values = allowed if isinstance(allowed, list) else [allowed]
                possible = describe_param(self.search_space[parent])
                if not values:
                    raise Problem(where, f"must list at least one value ({possible}), but got []")
                for value in values:
                    if not param_contains(self.search_space[parent], value):
                        raise Problem(
                            where,
                            f"{value!r} is not a possible value of {parent!r}, "
                            f"which is {possible}",
                        )
        try:
            self.ordered_parameters()
        except ValueError as e:
            cycle = str(e).rpartition(": ")[2].split(" -> ")
            raise Problem(
                ("search_space", cycle[0], "when"), f"{e}; remove one of these conditions"
            ) from e

    def _check_enqueue(self) -> None:
        for i, trial in enumerate(self.enqueue):
            if not trial:
                raise Problem(
                    ("enqueue", i),
                    "must fix at least one parameter, such as `{lr: 0.01}`, but got {}; "
                    "remove the entry",
                )
            for name, value in trial.items():
                if name not in self.search_space:
                    valid = list(self.search_space)
                    raise Problem(
                        ("enqueue", i, name),
                        f"not a parameter of `search_space`; {suggest(name, valid)}valid: "
                        f"{', '.join(valid) or 'none (the search space is empty)'}",
                    )
                param = self.search_space[name]
                if not param_contains(param, value):
                    quoted = ""
                    if isinstance(value, str) and re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?", value):
                        quoted = " (it is quoted, so it is text: remove the quotes)"
                    raise Problem(
                        ("enqueue", i, name),
                        f"{value!r} is outside the search space of {name!r}, which is "
                        f"{describe_param(param)}{quoted}; enqueue a value inside it or widen "
                        "the space",
                    )
                for parent, allowed in (param.when or {}).items():
                    values = allowed if isinstance(allowed, list) else [allowed]
                    if parent in trial and trial[parent] not in values:
                        raise Problem(
                            ("enqueue", i, name),
                            f"{name!r} is only sampled when {parent} is "
                            f"{' or '.join(map(str, values))}, but this trial sets {parent}: "
                            f"{trial[parent]}; drop {name!r} from it",
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
