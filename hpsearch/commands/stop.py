"""`hpsearch stop STUDY.yaml`: ask every worker of a study, on every machine, to stop."""

from __future__ import annotations

import argparse
import os
import socket
import time

import optuna
from optuna.trial import TrialState

from hpsearch.commands.common import add_study_arguments, load, study_name
from hpsearch.errors import HpsearchError, StorageError
from hpsearch.storage import open_storage
from hpsearch.worker.stopping import stop_record, stop_study

NAME = "stop"
HELP = "ask every worker of a study to hand back its running trial and exit (resume: run --resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--reason", default="stopped by `hpsearch stop`", help="why, recorded on the study"
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS",
        help="wait this long for the running trials to be handed back (default 60; 0: no wait)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.wait < 0:
        raise HpsearchError(f"--wait must be >= 0 seconds, but got {args.wait:g}")
    loaded, url = load(args)
    name = study_name(args, loaded)
    storage = open_storage(url, create_tables=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(
            f"study {name!r} is not in storage {url.redacted}; check --name and --storage"
        ) from None
    record = stop_record(study)
    if record is None or "reason" not in record:  # not stopped yet, or resumed since
        by = f"{socket.gethostname()}:{os.getpid()} (hpsearch stop)"
        stop_study(study, reason=args.reason, kind="stop", by=by)
    print(f"asked every worker of study {name!r} to stop ({url.redacted})", flush=True)
    deadline = time.monotonic() + args.wait
    running = _running(study)
    while running and time.monotonic() < deadline:
        time.sleep(1.0)
        running = _running(study)
    if running:
        print(
            f"{running} trial(s) still running after {args.wait:g}s: their workers hand them "
            "back at their next reported step, or when the trial ends"
        )
    else:
        print("no trial is running: every worker has stopped or is stopping")
    print(f"to go on later: hpsearch run {loaded.path} --resume")
    return 0


def _running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
