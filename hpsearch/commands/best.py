"""`hpsearch best STUDY.yaml`: the best parameters as YAML for `enqueue:`, with metrics."""

from __future__ import annotations

import argparse

from hpsearch.commands.common import add_study_arguments, load
from hpsearch.errors import HpsearchError
from hpsearch.inspect.best import best_trials, render
from hpsearch.inspect.source import open_view

NAME = "best"
HELP = "print the best trial's parameters (or the Pareto front) as YAML ready for `enqueue:`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--top",
        type=int,
        metavar="K",
        help="the K best trials (default 1); with several objectives, the first K of the "
        "Pareto front (default: all of it)",
    )


def run(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise HpsearchError(f"--top must be >= 1, but got {args.top}")
    loaded, url = load(args)
    view = open_view(loaded, url, name=args.name)
    try:
        trials, n_complete = best_trials(view, top=args.top)
        print(render(view, trials, n_complete), end="")
    finally:
        view.close()
    return 0
