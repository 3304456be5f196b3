"""Guidance for people new to tuning: `hpsearch init`'s study files and the pre-run warnings.

`presets` (the search-space presets with their published sources: data), `inspect_data` (what an
image folder holds), `machine` (this machine's device), `weights` (whether pretrained weights
are cached or downloadable), `timing` (the timing probe and the FLOP upper bound), `budget`
(`--budget` and the study file's `budget:`), `choose` (the decisions, each with why),
`writer` and `initfile` (commented YAML), `preflight` (the warnings of `validate` and `run`).
Never imports optuna: the advice on a finished study lives in `hpsearch.inspect.advice`.
"""

from __future__ import annotations

from hpsearch.guide.budget import DEFAULT_BUDGET, BudgetChoice, budget_section, parse_budget
from hpsearch.guide.choose import Plan, Why, plan_study, slug
from hpsearch.guide.initfile import render
from hpsearch.guide.inspect_data import DataFacts, inspect_folder, median_short_side
from hpsearch.guide.machine import MachineFacts, inspect_machine
from hpsearch.guide.preflight import Findings, check, check_weights, representative_values
from hpsearch.guide.presets import MODEL_FACTS, PRESETS, SOURCES, Knob, Preset, preset_for
from hpsearch.guide.timing import Speed, fmt_seconds, measure, upper_bound
from hpsearch.guide.weights import TEST_NETWORK_ENV, WeightsStatus, weights_status
from hpsearch.guide.writer import Doc, fmt_float, scalar

__all__ = [
    "DEFAULT_BUDGET",
    "MODEL_FACTS",
    "PRESETS",
    "SOURCES",
    "TEST_NETWORK_ENV",
    "BudgetChoice",
    "DataFacts",
    "Doc",
    "Findings",
    "Knob",
    "MachineFacts",
    "Plan",
    "Preset",
    "Speed",
    "WeightsStatus",
    "Why",
    "budget_section",
    "check",
    "check_weights",
    "fmt_float",
    "fmt_seconds",
    "inspect_folder",
    "inspect_machine",
    "measure",
    "median_short_side",
    "parse_budget",
    "plan_study",
    "preset_for",
    "render",
    "representative_values",
    "scalar",
    "slug",
    "upper_bound",
    "weights_status",
]
