"""The Optuna study a spec describes: its search space as `suggest_*` calls, its sampler and
pruner (closed registries), and creating or joining it with the spec stored beside it.

The study attributes' keys (`SPEC_ATTR`, `STOP_ATTR`, ...) live in `hpsearch.storage.attrs`
with every other attribute key; they are re-exported here for the modules that read them.
"""

from __future__ import annotations

from hpsearch.storage.attrs import (
    BUDGET_CHANGES_ATTR,
    READY_ATTR,
    SPACE_ATTR,
    SPEC_ATTR,
    STOP_ATTR,
    UID_ATTR,
)
from hpsearch.study.algorithms import (
    check_requirements,
    drawn_at_random,
    make_pruner,
    make_sampler,
)
from hpsearch.study.create import Joined, create_or_load, space_document
from hpsearch.study.join import read_attr, write_attr
from hpsearch.study.metrics import CURVES_ATTR, MetricLog, read_curves
from hpsearch.study.powers import (
    ENCODING_ATTR,
    EXPONENT,
    EXPONENT_AND_VALUE,
    EXPONENT_PREFIX,
    VALUE,
    PowersOfTwo,
    encoding_of,
    stored_as_exponents,
    study_encoding,
    unwrapped,
)
from hpsearch.study.space import (
    grid,
    is_active,
    optuna_name,
    suggest,
    to_optuna_params,
)

__all__ = [
    "BUDGET_CHANGES_ATTR",
    "CURVES_ATTR",
    "ENCODING_ATTR",
    "MetricLog",
    "read_curves",
    "EXPONENT",
    "EXPONENT_AND_VALUE",
    "VALUE",
    "PowersOfTwo",
    "encoding_of",
    "stored_as_exponents",
    "study_encoding",
    "unwrapped",
    "STOP_ATTR",
    "UID_ATTR",
    "Joined",
    "check_requirements",
    "drawn_at_random",
    "read_attr",
    "write_attr",
    "EXPONENT_PREFIX",
    "READY_ATTR",
    "SPACE_ATTR",
    "SPEC_ATTR",
    "create_or_load",
    "grid",
    "is_active",
    "make_pruner",
    "make_sampler",
    "optuna_name",
    "space_document",
    "suggest",
    "to_optuna_params",
]
