"""`hpsearch advise STUDY.yaml`: what the study found, in plain words, and what to run next."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpsearch.commands.common import add_study_arguments, check_output, load, write_study_file
from hpsearch.errors import HpsearchError
from hpsearch.guide.narrow import render_next
from hpsearch.inspect.advice import collect
from hpsearch.inspect.advice_text import render
from hpsearch.inspect.source import open_view
from hpsearch.spec.reader import read_yaml

NAME = "advise"
HELP = "say what mattered, which ranges to move, whether it still improves, and what to run next"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the narrowed study file to run next"
    )
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else None
    if out is not None:
        check_output(out, force=args.force)
    loaded, url = load(args)
    view = open_view(loaded, url, name=args.name)
    try:
        advice = collect(view)
    finally:
        view.close()
    print(render(advice, study_file=args.study_file), end="")
    if out is None:
        return 0
    if advice.best is None:
        raise HpsearchError("-o: no trial has completed yet, so there is nothing to narrow")
    raw, _ = read_yaml(loaded.path)
    text = render_next(
        raw, source=loaded.path, output=out, space=advice.next_space, fixed=advice.next_fixed,
        enqueue=advice.next_enqueue, changes=advice.changes or ["nothing: the ranges held"],
        study=advice.study,
    )  # fmt: skip
    write_study_file(out, text, command="advise")
    print(f"\nwrote {out}: run it with `hpsearch run {out}`")
    return 0
