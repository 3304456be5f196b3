"""`hpsearch validate STUDY.yaml`: check the file, the objective and the data; run nothing."""

from __future__ import annotations

import argparse
import logging

from hpsearch import objective
from hpsearch.commands.common import Preflight, add_study_arguments, load, preflight
from hpsearch.spec import GridSampler
from hpsearch.study import check_requirements, drawn_at_random

NAME = "validate"
_log = logging.getLogger("hpsearch")
HELP = "check a study file and print the resolved search space and storage; run nothing"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)


def run(args: argparse.Namespace) -> int:
    loaded, url = load(args)
    check_requirements(loaded)
    objective.check(loaded)
    budget = loaded.spec.budget
    # Before anything is printed: a study that cannot succeed says only that.
    checked = preflight(loaded, timeout_s=budget.timeout, gpu_hours=budget.gpu_hours)
    spec = loaded.spec
    print(f"{loaded.path}: ok")
    print(f"  study:      {args.name or spec.name}")
    directions = ", ".join(
        f"{d} {m}" for d, m in zip(spec.study_directions, spec.metrics, strict=True)
    )
    print(f"  objective:  {directions}")
    print(f"  storage:    {url.redacted} (from {url.source})")
    print(f"  sampler:    {spec.sampler.type}   pruner: {spec.pruner.type}")
    budget = spec.budget
    print(
        f"  budget:     n_trials={budget.n_trials or 'unlimited'} "
        f"timeout={f'{budget.timeout:.0f}s' if budget.timeout else 'none'} "
        f"gpu_hours={budget.gpu_hours or 'none'} epochs={budget.epochs or 'none'} "
        f"max_failures={budget.max_failures}"
    )
    print("  search space:")
    for name in spec.ordered_parameters():
        param = spec.search_space[name]
        shown = param.model_dump(exclude={"when"}, exclude_none=True)
        shown.pop("type")
        fields = " ".join(f"{k}={v}" for k, v in shown.items())
        when = f"  when {param.when}" if param.when else ""
        print(f"    {name}: {param.type} {fields}{when}")
    if spec.enqueue:
        print(f"  enqueued:   {len(spec.enqueue)} trial(s)")
    if budget.is_unlimited and not isinstance(spec.sampler, GridSampler):
        _log.warning(
            "%s: budget: none set, so the study runs until it is stopped; set e.g. "
            "budget: {n_trials: 30} (or timeout, gpu_hours, epochs)", loaded.path
        )  # fmt: skip
    if (random := drawn_at_random(loaded)) is not None:
        _log.warning("%s", random)
    _print_data_summary(checked)
    return 0


def _print_data_summary(checked: Preflight | None) -> None:
    if checked is None:
        return
    print("  data:")
    for line in checked.summary.lines():
        print(f"    {line}")
    if checked.findings.time:
        print(f"  time:       {checked.findings.time}")
    for line in checked.findings.warnings:
        print(f"  warning: {line}")
