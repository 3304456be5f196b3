"""`hpsearch run STUDY.yaml`: create or join the study and run trials until the budget is spent."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hpsearch.budget import for_run
from hpsearch.commands.common import add_study_arguments, bounded_int, load, preflight
from hpsearch.commands.progress import Progress, install
from hpsearch.errors import HpsearchError
from hpsearch.spec import Budget, LoadedSpec, parse_duration
from hpsearch.storage import PASSWORD_ENV, STORAGE_ENV, StorageURL, refuse_sqlite_across_machines
from hpsearch.study import drawn_at_random
from hpsearch.worker import RunOptions, launch, parse_gpus, run_worker
from hpsearch.worker.provenance import artifacts_dir

NAME = "run"
HELP = "create or join the study and run trials until its budget is spent"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--n-trials",
        type=bounded_int("--n-trials", 1),
        metavar="N",
        help="study-wide trial budget",
    )
    parser.add_argument("--timeout", metavar="DURATION", help="study-wide time budget (2h, 30m)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on with a study that `hpsearch stop` (or its budget.target) stopped",
    )
    parser.add_argument(
        "--change-budget",
        action="store_true",
        help="make this file's budget (and the flags') the study's, when joining a study "
        "that has another; the change is recorded on the study",
    )
    parser.add_argument("--artifacts", metavar="DIR", help="where checkpoints go on this machine")
    parser.add_argument(
        "--workers",
        type=bounded_int("--workers", 1, 1024),
        default=1,
        metavar="N",
        help="start N local worker processes",
    )
    parser.add_argument(
        "--gpus", metavar="all|0,2", help="start one worker process per GPU (all, or indices)"
    )
    # Set by the launcher for its children; None for a run started by hand.
    parser.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)


def budget_from(args: argparse.Namespace, budget: Budget) -> tuple[Budget, bool]:
    """The study-wide budget of this run (the flags override the file's `budget:`), and
    whether it changes a joined study's budget (`budget.for_run`)."""
    if args.n_trials is not None and args.n_trials < 1:
        raise HpsearchError(f"--n-trials must be >= 1, but got {args.n_trials}")
    timeout = None
    if args.timeout is not None:
        try:
            timeout = parse_duration(args.timeout)
        except ValueError as e:
            raise HpsearchError(f"--timeout: {e}") from None
    return for_run(budget, n_trials=args.n_trials, timeout=timeout, change=args.change_budget)


def run(args: argparse.Namespace) -> int:
    loaded, url = load(args)
    budget, change_budget = budget_from(args, loaded.spec.budget)
    if args.workers < 1:
        raise HpsearchError(f"--workers must be >= 1, but got {args.workers}")
    if args.gpus and args.workers > 1:
        raise HpsearchError("give --gpus or --workers, not both (--gpus starts one per GPU)")
    gpus = parse_gpus(args.gpus) if args.gpus else None
    if args.worker_id is None:  # the launcher's children: their parent has checked already
        _check_before_start(args, loaded, url, budget, workers=len(gpus or ()) or args.workers)
    if gpus or args.workers > 1:
        refuse_sqlite_across_machines(url)
        return launch(_child_argv(args), url, n_workers=args.workers, gpus=gpus)
    where = url.source if url.source != "default" else "the default; choose with --storage"
    _log.info("study %r on %s (%s)", args.name or loaded.spec.name, url.redacted, where)
    # The URL holds the password now; the trials this process runs (a function objective, the
    # trainer's data loaders, a command) do not need it in their environment.
    for name in (PASSWORD_ENV, STORAGE_ENV, "OPTUNA_STORAGE"):
        os.environ.pop(name, None)
    options = RunOptions(
        budget=budget,
        change_budget=change_budget,
        study_name=args.name,
        worker_id=args.worker_id or "0",
        artifacts=args.artifacts,
        resume=args.resume,
    )
    progress = Progress(live=sys.stderr.isatty() and _log.isEnabledFor(logging.INFO))
    install(progress)
    try:
        report = run_worker(
            loaded, url, options, on_trial=progress.on_trial, on_step=progress.on_step
        )
    finally:
        progress.clear()
    if report.ran and not report.succeeded:
        # Every trial this worker ran failed: say so, and let a script or scheduler notice.
        _log.error(
            "no trial of study %r completed here (%s); see `hpsearch status` and the trials' "
            "fail_reason", report.study_name, _counts(report.trials)
        )  # fmt: skip
        return 1
    return 0


def _counts(trials: dict[str, int]) -> str:
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(trials.items()))


def _check_before_start(
    args: argparse.Namespace, loaded: LoadedSpec, url: StorageURL, budget: Budget, workers: int
) -> None:
    """The guide's warnings (and the error of unobtainable weights) before any trial starts."""
    if (random := drawn_at_random(loaded)) is not None:
        _log.warning("%s", random)
    name = args.name or loaded.spec.name
    # The trainer's own cache folder: the folder scan done here is reused by the trials.
    cache = artifacts_dir(loaded, url, name, args.artifacts) / "cache"
    checked = preflight(
        loaded, timeout_s=budget.timeout, gpu_hours=budget.gpu_hours, workers=workers,
        cache_dir=cache,
    )  # fmt: skip
    if checked is None:
        return
    for line in checked.findings.warnings:
        _log.warning(line)
    if checked.findings.time:
        _log.info("time: %s", checked.findings.time)


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The children's arguments: the parent's, less the storage (it travels in the environment)."""
    argv = [args.study_file]
    for flag, value in (("--name", args.name), ("--n-trials", args.n_trials),
                        ("--timeout", args.timeout), ("--artifacts", args.artifacts)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    for flag in ("change_budget", "resume"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    if args.quiet:
        argv.append("-q")
    if args.verbose:
        argv.append("-v")
    return argv
