"""`hpsearch report STUDY.yaml -o report.html`: one self-contained, offline HTML report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hpsearch.commands.common import add_study_arguments, check_output, load, write_output
from hpsearch.inspect.report import build
from hpsearch.inspect.source import open_view

NAME = "report"
HELP = "write one self-contained HTML file: status, best parameters and Optuna's plots"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "-o", "--output", default="report.html", metavar="FILE",
        help="the HTML file to write (default report.html)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    path = Path(args.output)
    check_output(path, force=args.force)
    loaded, url = load(args)
    view = open_view(loaded, url, name=args.name)
    try:
        page = build(view)
    finally:
        view.close()
    write_output(path, page)
    _log.info("wrote %s (%.1f MB, opens offline)", path, len(page) / 1e6)
    return 0
