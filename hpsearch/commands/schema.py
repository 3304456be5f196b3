"""`hpsearch schema`: print the study file's JSON Schema (for editor completion)."""

from __future__ import annotations

import argparse
import json

from hpsearch.spec import json_schema

NAME = "schema"
HELP = "print the JSON Schema of the study file, for editor completion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
