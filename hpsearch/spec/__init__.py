"""The study file: its schema as frozen pydantic models, and `load_spec`, the one YAML reader.

Every error a user can make in the file becomes one `SpecError` line naming the file, the line,
the key path and the fix. This package imports neither torch nor optuna (a test checks), so
`hpsearch validate` answers in milliseconds.

Modules: `_base` (the frozen, strict base model, unknown keys, durations), `params` (search-space
parameter kinds), `algorithms` (samplers and pruners), `artifacts` (where checkpoints are shared),
`tracking` (the experiment trackers each trial is sent to),
`objectives` (what a trial runs), `study` (the whole file), `reader` (safe, bounded YAML and the
line of every key), `yaml_errors` (YAML syntax errors in words), `messages` (pydantic's errors as
one line), `loader` (`load_spec`).
"""

from __future__ import annotations

from hpsearch.spec._base import (
    MAX_COUNT,
    MAX_SECONDS,
    Duration,
    KeyPath,
    Problem,
    Scalar,
    SpecModel,
    parse_duration,
    unknown_key_message,
)
from hpsearch.spec.algorithms import (
    AutoPruner,
    AutoSampler,
    CmaesSampler,
    GpSampler,
    GridSampler,
    HyperbandPruner,
    MedianPruner,
    NoPruner,
    Nsga2Sampler,
    PatientPruner,
    PercentilePruner,
    PrunerSpec,
    QmcSampler,
    RandomSampler,
    SamplerSpec,
    SuccessiveHalvingPruner,
    ThresholdPruner,
    TpeSampler,
    WilcoxonPruner,
    WrappedPruner,
)
from hpsearch.spec.artifacts import ArtifactStoreSpec, FileSystemStore, S3Store, parse_store_url
from hpsearch.spec.loader import LoadedSpec, json_schema, load_spec
from hpsearch.spec.objectives import (
    CommandObjective,
    FunctionObjective,
    ObjectiveSpec,
    TrainerObjective,
)
from hpsearch.spec.params import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    PowerOfTwoParam,
    When,
    param_contains,
)
from hpsearch.spec.study import BatchSizeFit, Budget, Direction, StudySpec, Workers
from hpsearch.spec.tracking import MlflowTracking, TensorBoardTracking, Tracking, WandbTracking

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "ArtifactStoreSpec",
    "MlflowTracking",
    "TensorBoardTracking",
    "Tracking",
    "WandbTracking",
    "AutoPruner",
    "AutoSampler",
    "FileSystemStore",
    "S3Store",
    "parse_store_url",
    "BatchSizeFit",
    "Budget",
    "CategoricalParam",
    "CmaesSampler",
    "CommandObjective",
    "Direction",
    "Duration",
    "FloatParam",
    "FunctionObjective",
    "GpSampler",
    "GridSampler",
    "HyperbandPruner",
    "IntParam",
    "KeyPath",
    "LoadedSpec",
    "MedianPruner",
    "NoPruner",
    "Nsga2Sampler",
    "ObjectiveSpec",
    "Param",
    "PatientPruner",
    "PercentilePruner",
    "PowerOfTwoParam",
    "Problem",
    "PrunerSpec",
    "QmcSampler",
    "RandomSampler",
    "SamplerSpec",
    "Scalar",
    "StudySpec",
    "SuccessiveHalvingPruner",
    "ThresholdPruner",
    "TpeSampler",
    "TrainerObjective",
    "When",
    "WilcoxonPruner",
    "WrappedPruner",
    "Workers",
    "SpecModel",
    "json_schema",
    "load_spec",
    "param_contains",
    "parse_duration",
    "unknown_key_message",
]
