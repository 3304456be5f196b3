"""Arguments and steps several commands share: the study file, its storage, opening the study."""

from __future__ import annotations

import argparse

from hpsearch.spec import LoadedSpec, load_spec
from hpsearch.storage import StorageURL, resolve


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.yaml", help="the study file")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL; overrides HPSEARCH_STORAGE and `storage:` (never put a password "
        "here: use HPSEARCH_DB_PASSWORD)",
    )
    parser.add_argument("--name", help="study name; overrides `name:` in the file")


def load(args: argparse.Namespace) -> tuple[LoadedSpec, StorageURL]:
    loaded = load_spec(args.study_file)
    return loaded, resolve(loaded, flag=args.storage)


def study_name(args: argparse.Namespace, loaded: LoadedSpec) -> str:
    return str(args.name or loaded.spec.name)
