"""`hpsearch examples`: write the example study files that ship with the package."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from hpsearch.commands.common import check_output, write_output
from hpsearch.errors import HpsearchError

NAME = "examples"
HELP = "write the example study files (the quickstart, a ResNet-50 image folder) to a folder"


def example_files() -> dict[str, str]:
    """{file name: text} of every example study shipped in the package."""
    folder = resources.files("hpsearch").joinpath("examples")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        default=".",
        metavar="DIR",
        help="the folder to write to, created if missing (default: .)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise HpsearchError(f"-o {folder}: is a file, not a folder; name a folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = example_files()
    existing = [name for name in files if os.path.lexists(folder / name)]
    if existing and not args.force:
        raise HpsearchError(
            f"-o {folder}: {', '.join(existing)} exist already; pass --force to overwrite"
        )
    for name in files:
        check_output(folder / name, force=args.force)
    for name, text in files.items():
        write_output(folder / name, text)
        print(folder / name)
    print(f"then: hpsearch run {folder / 'quickstart.yaml'}")
    return 0
