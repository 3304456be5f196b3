"""`hpsearch run STUDY.yaml`: create or join the study and run trials until the budget is spent."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from hpsearch.commands.common import add_study_arguments, load, preflight
from hpsearch.errors import HpsearchError
from hpsearch.spec import Budget, LoadedSpec, parse_duration
from hpsearch.storage import StorageURL, refuse_sqlite_across_machines
from hpsearch.worker import Ledger, Limits, launch, parse_gpus, run_worker
from hpsearch.worker.provenance import artifacts_dir

NAME = "run"
HELP = "create or join the study and run trials until its budget is spent"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--n-trials", type=int, metavar="N", help="study-wide trial budget")
    parser.add_argument("--timeout", metavar="DURATION", help="study-wide time budget (2h, 30m)")
    parser.add_argument("--artifacts", metavar="DIR", help="where checkpoints go on this machine")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="start N local worker processes"
    )
    parser.add_argument(
        "--gpus", metavar="all|0,2", help="start one worker process per GPU (all, or indices)"
    )
    # Set by the launcher for its children; None for a run started by hand.
    parser.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)


def limits_from(args: argparse.Namespace, budget: Budget) -> Limits:
    """The study-wide budget: the flags override the file's `budget:`."""
    if args.n_trials is not None and args.n_trials < 1:
        raise HpsearchError(f"--n-trials must be >= 1, but got {args.n_trials}")
    timeout = budget.timeout
    if args.timeout is not None:
        try:
            timeout = parse_duration(args.timeout)
        except ValueError as e:
            raise HpsearchError(f"--timeout: {e}") from None
    n_trials = args.n_trials if args.n_trials is not None else budget.n_trials
    return Limits(n_trials=n_trials, timeout_s=timeout, gpu_hours=budget.gpu_hours)


def run(args: argparse.Namespace) -> int:
    loaded, url = load(args)
    limits = limits_from(args, loaded.spec.budget)
    if args.workers < 1:
        raise HpsearchError(f"--workers must be >= 1, but got {args.workers}")
    if args.gpus and args.workers > 1:
        raise HpsearchError("give --gpus or --workers, not both (--gpus starts one per GPU)")
    gpus = parse_gpus(args.gpus) if args.gpus else None
    if args.worker_id is None:  # the launcher's children: their parent has checked already
        _check_before_start(args, loaded, url, limits, workers=len(gpus or ()) or args.workers)
    if gpus or args.workers > 1:
        refuse_sqlite_across_machines(url)
        return launch(_child_argv(args), url, n_workers=args.workers, gpus=gpus)
    _log.info("study %r on %s (from %s)", args.name or loaded.spec.name, url.redacted, url.source)
    started = time.monotonic()
    run_worker(
        loaded,
        url,
        limits=limits,
        study_name=args.name,
        worker_id=args.worker_id or "0",
        artifacts=args.artifacts,
        on_trial=_progress(limits, started),
    )
    return 0


def _check_before_start(
    args: argparse.Namespace, loaded: LoadedSpec, url: StorageURL, limits: Limits, workers: int
) -> None:
    """The guide's warnings (and the error of unobtainable weights) before any trial starts."""
    name = args.name or loaded.spec.name
    # The trainer's own cache folder: the folder scan done here is reused by the trials.
    cache = artifacts_dir(loaded, url, name, args.artifacts) / "cache"
    checked = preflight(
        loaded, timeout_s=limits.timeout_s, gpu_hours=limits.gpu_hours, workers=workers,
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
    if args.quiet:
        argv.append("-q")
    if args.verbose:
        argv.append("-v")
    return argv


ProgressLine = Callable[[optuna.Study, FrozenTrial, Ledger | None], None]


def _progress(limits: Limits, started: float) -> ProgressLine:
    def line(study: optuna.Study, trial: FrozenTrial, ledger: Ledger | None) -> None:
        if not _log.isEnabledFor(logging.INFO):
            return  # -q: skip the two queries behind the line
        state = ledger.state() if ledger is not None else None
        done = f"{state.claimed - state.retry_slots}" if state is not None else "?"
        total = f"/{limits.n_trials}" if limits.n_trials else ""
        value = ""
        if trial.state.name == "PRUNED":
            value = f" at step {trial.last_step}"
        elif trial.values is not None:
            value = " value=" + ",".join(f"{v:.6g}" for v in trial.values)
        elif trial.state.name == "FAIL":
            value = f" ({trial.user_attrs.get('fail_reason', 'failed')})"
        best = ""
        if len(study.directions) == 1:
            try:
                b = study.best_trial
                best = f" | best {b.value:.6g} (trial {b.number})"
            except ValueError:
                pass
        _log.info(
            "[%s%s] trial %d %s%s%s | %.0fs",
            done, total, trial.number, trial.state.name, value, best,
            time.monotonic() - started,
        )  # fmt: skip

    return line
