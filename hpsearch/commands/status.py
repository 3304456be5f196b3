"""`hpsearch status STUDY.yaml`: trials, budget, best, speed and ETA, workers, stuck trials."""

from __future__ import annotations

import argparse
import json
import sys
import time

from hpsearch.commands.common import add_study_arguments, load
from hpsearch.errors import HpsearchError
from hpsearch.inspect.source import open_view
from hpsearch.inspect.status import collect
from hpsearch.inspect.table import render

NAME = "status"
HELP = "show how a study is doing: trials, budget, best, speed and ETA, workers, stuck trials"
DEFAULT_WATCH_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_WATCH_S,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    parser.add_argument(
        "--recent",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="a worker that finished a trial this recently counts as live (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        raise HpsearchError(f"--watch must be > 0 seconds, but got {args.watch:g}")
    if args.recent <= 0:
        raise HpsearchError(f"--recent must be > 0 minutes, but got {args.recent:g}")
    loaded, url = load(args)
    view = open_view(loaded, url, name=args.name)
    try:
        while True:
            status = collect(view, recent_s=args.recent * 60)
            if args.json:
                # One object per refresh and per line, so `--watch --json` is JSON Lines.
                indent = None if args.watch is not None else 2
                print(json.dumps(status.as_json(), indent=indent, default=str), flush=True)
            else:
                if args.watch is not None and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")  # clear the screen, cursor home
                print(render(status), flush=True)
                if args.watch is not None:
                    print(f"\n(refreshing every {args.watch:g}s; Ctrl-C to stop)", flush=True)
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        view.close()
