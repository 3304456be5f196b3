"""`hpsearch export STUDY.yaml -o FILE`: one row per trial as CSV, JSON Lines or Parquet."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpsearch.commands.common import add_study_arguments, check_output, load
from hpsearch.inspect.export import FORMATS, export, export_to, format_for
from hpsearch.inspect.source import open_view

NAME = "export"
HELP = "write one row per trial (values, parameters, curve summary, attributes) to a file"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="csv, json (JSON Lines: one object per line) or parquet; default: from -o's suffix",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE",
        help="the file to write; - for standard output (CSV unless --format)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    to_stdout = args.output == "-"
    path = Path(args.output)
    fmt = args.format or "csv" if to_stdout else format_for(path, args.format)
    if not to_stdout:
        check_output(path, force=args.force)
    loaded, url = load(args)
    view = open_view(loaded, url, name=args.name)
    try:
        n = export_to(view, sys.stdout, fmt) if to_stdout else export(view, path, fmt)
    finally:
        view.close()
    _log.info("wrote %d trial(s) of study %r to %s (%s)", n, view.name, args.output, fmt)
    return 0
