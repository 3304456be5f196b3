"""`hpsearch best STUDY.yaml`: the best parameters as YAML for `enqueue:`, with metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpsearch.commands.common import add_study_arguments, bounded_int, load
from hpsearch.errors import HpsearchError
from hpsearch.inspect.best import best_trials, render
from hpsearch.inspect.source import open_view
from hpsearch.spec import TrainerObjective
from hpsearch.storage.artifacts import open_store

NAME = "best"
HELP = "print the best trial's parameters (or the Pareto front) as YAML ready for `enqueue:`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--top",
        type=bounded_int("--top", 1),
        metavar="K",
        help="the K best trials (default 1); with several objectives, the first K of the "
        "Pareto front (default: all of it)",
    )
    parser.add_argument(
        "--download",
        metavar="DIR",
        help="copy the checkpoints of the trials shown into DIR, from the study's artifact store "
        "(any machine) or this machine's artifacts folder",
    )


def run(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise HpsearchError(f"--top must be >= 1, but got {args.top}")
    loaded, url = load(args)
    shared = open_store(loaded, writable=False)
    objective = loaded.spec.objective
    keep = objective.keep_checkpoints if isinstance(objective, TrainerObjective) else None
    view = open_view(loaded, url, name=args.name)
    try:
        trials, n_complete = best_trials(view, top=args.top)
        print(render(view, trials, n_complete, keep=keep), end="")
        if args.download is not None:
            # Only here: the artifact store's client (boto3 for S3) costs a third of a
            # second of start-up that a plain `best` does not need.
            from hpsearch.inspect.fetch import download_checkpoint

            if not trials:
                raise HpsearchError("no completed trial yet: nothing to --download")
            for rank, trial in enumerate(trials):
                if keep is not None and rank >= keep:
                    continue  # its checkpoint was not kept; the listing says so
                saved = download_checkpoint(view, trial, Path(args.download), shared)
                print(f"# saved trial {trial.number}'s checkpoint to {saved}")
    finally:
        view.close()
    return 0
